//! `fleet N`: logins with the PostgreSQL store beside the file store, then
//! three daemons sharing one database at 8 and 64 logins in flight.

use super::*;

/// `twofold-bench fleet N`: a login through PAM with the store in a
/// PostgreSQL database (a server this run starts: `initdb` in a temporary
/// directory, a Unix socket, default settings, so `fsync` and
/// `synchronous_commit` on) beside the same with the file store, in the same
/// run: N logins each, one at a time in 3 interleaved rounds, then N at 8 in
/// flight. Then three daemons, each on its own bus, sharing the database
/// (`fleet_hosts`).
pub(crate) fn fleet(n: usize) -> Result<()> {
    use_release_build();
    let n = n.max(6) / 6 * 6;
    let db = Fleet::new()?;
    // Two logins per user (this step's code, then the next one's), for each
    // of the two phases; then the three-daemon runs' users.
    let users = n;
    let per_run = n / 2;
    let extra = per_run * LEVELS.len() * 3;
    let stores = [
        ("file store", Modules::start(users + extra)?),
        (
            "PostgreSQL store",
            Modules::start_on(users + extra, Some(&db))?,
        ),
    ];
    print_machine();
    println!("load average at the start: {}", loadavg());
    let half: Vec<usize> = (0..users / 2).collect();
    let mut seq: Vec<(Vec<Outcome>, f64)> = vec![(Vec::new(), 0.0), (Vec::new(), 0.0)];
    // Statements the database ran for the PostgreSQL store's logins: each
    // of the store's calls is one autocommitted statement, a transaction.
    let transactions = || -> Result<u64> {
        Ok(db
            .psql(&format!(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '{}'",
                db.db
            ))?
            .trim()
            .parse()?)
    };
    // A server process publishes its counts when idle, within 10 s: the
    // seeding's, before the first reading.
    std::thread::sleep(std::time::Duration::from_secs(11));
    let statements = transactions()?;
    // With TWOFOLD_BENCH_PG_LOG=1, the server logs every statement of the
    // sequential rounds with its duration (`log_min_duration_statement = 0`,
    // which costs time itself: figures of such a run are not comparable).
    let server_log = std::env::var_os("TWOFOLD_BENCH_PG_LOG").is_some();
    let log_from = db.cluster.log().len();
    if server_log {
        db.psql("ALTER SYSTEM SET log_min_duration_statement = 0")?;
        db.psql("SELECT pg_reload_conf()")?;
    }
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
    if server_log {
        db.psql("ALTER SYSTEM RESET log_min_duration_statement")?;
        db.psql("SELECT pg_reload_conf()")?;
        statement_durations(&db.cluster.log()[log_from..], seq[1].0.len());
    }
    std::thread::sleep(std::time::Duration::from_secs(11));
    let statements = transactions()? - statements;
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
    println!(
        "statements on the database per login (pg_stat_database's transactions, the sequential rounds): {:.2}",
        statements as f64 / seq[1].0.len() as f64
    );
    println!("load average: {}", loadavg());
    let [(_, files), (_, first)] = &stores;
    fleet_hosts(files, first, &db, users, per_run)
}

const LEVELS: [usize; 2] = [8, 64];

/// The load average (1, 5, 15 minutes), as `/proc/loadavg` gives it.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Three daemons on one database (`first` and two more, each on its own
/// bus, with the same accounts): at 8 and 64 in flight, lanes spread over
/// the three in turn, (1) every code typed once: throughput and correct
/// codes refused, beside one daemon on its files at the same level; (2)
/// every code typed at the same moment on two hosts: accepted twice, and
/// accepted by neither, counted.
fn fleet_hosts(
    files: &Modules,
    first: &Modules,
    db: &Fleet,
    from: usize,
    per_run: usize,
) -> Result<()> {
    let env: Vec<(&str, &str)> = first
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut others = Vec::new();
    for _ in 0..2 {
        let bus = Bus::start()?;
        let daemon = Daemon::start_with_env(&bus, &db.config(), &env)?;
        // One login first (a wrong code for an account used above): the
        // daemon's first account lookups, through nss_wrapper, which loads
        // its files on first use and is not safe to start from several
        // threads at once (lookups failed with ENOENT without this).
        let warm = first
            .work
            .path()
            .join(format!("codes-warm-{}", others.len()));
        std::fs::write(&warm, "tfb0 000000\n")?;
        let out = bus
            .command(artifacts().pam_driver())
            .arg("--confdir")
            .arg(first.twofold.confdir())
            .args(["--service", &first.twofold.name, "--rhost", DEFAULT_RHOST])
            .args(["--repeat", "1", "--codes"])
            .arg(&warm)
            .envs(first.env.iter().map(|(k, v)| (k, v)))
            .output()?;
        if out.stdout.is_empty() {
            bail!("warm-up login: {}", String::from_utf8_lossy(&out.stderr));
        }
        others.push((bus, daemon));
    }
    let buses: Vec<&Bus> = std::iter::once(&first.bus)
        .chain(others.iter().map(|(b, _)| b))
        .collect();
    let mut accounts = Accounts(from..from + per_run * LEVELS.len() * 3);
    println!(
        "\nThree daemons, each on its own bus, sharing the database: lanes (pam-driver processes \
         started together) spread over them in turn; {} logins per run ({per_run} users, two steps each)\n",
        per_run * 2
    );
    println!(
        "| in flight | one daemon, file store: logins/s | refused | three daemons, database: logins/s | median | 99th percentile | refused | each code typed on two hosts at once: logins/s | accepted twice | accepted by neither | load average |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let daemons: Vec<u32> = std::iter::once(&first.daemon)
        .chain(others.iter().map(|(_, d)| d))
        .filter_map(Daemon::pid)
        .collect();
    let file_daemon: Vec<u32> = files.daemon.pid().into_iter().collect();
    let file_cpu = || Cpu::read(&file_daemon);
    let fleet_cpu = || Cpu::read(&daemons);
    let mut cpu_rows = Vec::new();
    let sampler = Sampler::start();
    let mut refused_users: Vec<String> = Vec::new();
    let mut wrong = 0;
    for in_flight in LEVELS {
        // The file store on one host.
        let users = accounts.take(per_run)?;
        let logins = files.totp_logins(&users)?;
        let before = file_cpu();
        let (outcomes, wall) = concurrent(files, TWOFOLD, &logins, in_flight)?;
        let f = figures(&outcomes, wall, 0.0);
        cpu_rows.push((
            in_flight,
            "one daemon, file store",
            file_cpu().since(&before, logins.len(), wall, &sampler),
        ));
        // The fleet: every code once.
        let users = accounts.take(per_run)?;
        let logins = first.totp_logins(&users)?;
        let mut lanes: Vec<Vec<usize>> = vec![Vec::new(); in_flight];
        for (k, (user, _)) in logins.iter().enumerate() {
            let u: usize = user.trim_start_matches("tfb").parse()?;
            lanes[u % in_flight].push(k);
        }
        let before = fleet_cpu();
        let (outcomes, wall) = run_lanes_on(first, &buses, &logins, &lanes)?;
        let d = figures(&outcomes, wall, 0.0);
        // A correct code typed once and refused: whose, for the report below.
        for (k, o) in outcomes.iter().enumerate() {
            if o.result != pam::SUCCESS {
                eprintln!(
                    "refused at {in_flight} in flight: {} (PAM result {}, after {:.1} ms)",
                    logins[k].0,
                    o.result,
                    o.micros as f64 / 1000.0
                );
                refused_users.push(logins[k].0.clone());
            }
        }
        cpu_rows.push((
            in_flight,
            "three daemons, database",
            fleet_cpu().since(&before, logins.len(), wall, &sampler),
        ));
        // The fleet: every code twice, in lanes p and p + 1 (other hosts).
        let users = accounts.take(per_run)?;
        let codes = first.totp_logins(&users)?;
        let mut logins = Vec::new();
        let mut lanes: Vec<Vec<usize>> = vec![Vec::new(); in_flight];
        let mut pairs = Vec::new();
        for (user, code) in &codes {
            let u: usize = user.trim_start_matches("tfb").parse()?;
            let p = u % in_flight;
            for lane in [p, (p + 1) % in_flight] {
                logins.push((user.clone(), code.clone()));
                lanes[lane].push(logins.len() - 1);
            }
            pairs.push((logins.len() - 2, logins.len() - 1));
        }
        let (outcomes, wall) = run_lanes_on(first, &buses, &logins, &lanes)?;
        let ok = |k: usize| usize::from(outcomes[k].result == pam::SUCCESS);
        let twice = pairs.iter().filter(|(a, b)| ok(*a) + ok(*b) == 2).count();
        let never = pairs.iter().filter(|(a, b)| ok(*a) + ok(*b) == 0).count();
        println!(
            "| {in_flight} | {:.0} | {} | {:.0} | {:.3} ms | {:.3} ms | {} | {:.0} | {twice} | {never} | {} |",
            f.per_second,
            f.refused_text(),
            d.per_second,
            d.median_ms,
            d.p99_ms,
            d.refused_text(),
            logins.len() as f64 / wall,
            loadavg()
        );
        wrong += twice + never + d.refused + f.refused;
    }
    println!(
        "\nCPU per login (utime + stime, ms), the runs above that type every code once: \
         twofoldd (all daemons of the run), the PostgreSQL server (every `postgres` process), \
         pam-driver (the lanes, waited for; the module reaches twofoldd on its login socket, \
         so dbus-daemon has no part), and the machine's whole CPU over the \
         run's own time (from the lanes' common start to their end, sampled every 10 ms; their \
         start-up before it left out), as a share of all its cores (other work on the \
         machine included)\n"
    );
    println!("| in flight | run | twofoldd | PostgreSQL | pam-driver | sum | machine busy |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (in_flight, name, c) in &cpu_rows {
        println!(
            "| {in_flight} | {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} % |",
            c.daemons,
            c.postgres,
            c.drivers,
            c.daemons + c.postgres + c.drivers,
            c.busy * 100.0
        );
    }
    if wrong != 0 {
        // What the daemons said of the logins they did not accept as
        // expected (neither accepted nor a replay refused).
        let logs = [first.daemon.log(), others[0].1.log(), others[1].1.log()];
        for (host, log) in logs.iter().enumerate() {
            for l in log.lines().filter(|l| {
                refused_users
                    .iter()
                    .any(|u| l.contains(&format!("user={u} ")))
                    || !(l.contains("outcome=accepted")
                        || l.contains("outcome=asked-for-code")
                        || l.contains("outcome=refused-replayed-code"))
            }) {
                eprintln!("host {host}: {l}");
            }
        }
        bail!("{wrong} wrong answers under concurrency (above)");
    }
    Ok(())
}

/// `run_lanes`, lane n's driver on `buses[n % buses.len()]`.
pub(crate) fn run_lanes_on(
    m: &Modules,
    buses: &[&Bus],
    logins: &[Login],
    lanes: &[Vec<usize>],
) -> Result<(Vec<Outcome>, f64)> {
    let start_at = unix_millis() + 300 + 5 * lanes.len() as u64;
    let mut children = Vec::new();
    for (n, lane) in lanes.iter().enumerate() {
        let file = m.work.path().join(format!("codes-fleet-lane{n}"));
        let mut text = String::new();
        for &k in lane {
            writeln!(text, "{} {}", logins[k].0, logins[k].1)?;
        }
        std::fs::write(&file, text)?;
        let mut c = buses[n % buses.len()].command(artifacts().pam_driver());
        c.arg("--confdir")
            .arg(m.twofold.confdir())
            .args(["--service", &m.twofold.name, "--rhost", DEFAULT_RHOST])
            .args(["--repeat", &lane.len().to_string()])
            .arg("--codes")
            .arg(&file)
            .args(["--start-at", &start_at.to_string()])
            .envs(m.env.iter().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        children.push((c.spawn()?, lane));
    }
    gather(children, logins.len(), start_at)
}

/// CPU seconds used so far (then, by `since`, ms per login) by the run's
/// daemons, the PostgreSQL server's processes and this
/// process's waited-for children (the pam-driver lanes); `busy`: the
/// machine's busy share of all its cores over a run (`Sampler`).
struct Cpu {
    daemons: f64,
    postgres: f64,
    drivers: f64,
    machine: f64,
    busy: f64,
}

impl Cpu {
    fn read(daemons: &[u32]) -> Cpu {
        let postgres = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "postgres")
            })
            .map(cpu_seconds)
            .sum();
        Cpu {
            daemons: daemons.iter().copied().map(cpu_seconds).sum(),
            postgres,
            drivers: children_cpu_seconds(),
            machine: machine_seconds(),
            busy: 0.0,
        }
    }

    /// Per login, in ms, from `before` to now, over `logins`; `busy`
    /// from `sampler` over the run's own `wall` s that ended now.
    fn since(&self, before: &Cpu, logins: usize, wall: f64, sampler: &Sampler) -> Cpu {
        let per = |now: f64, then: f64| (now - then) * 1000.0 / logins.max(1) as f64;
        let end = std::time::Instant::now();
        let start = end - std::time::Duration::from_secs_f64(wall);
        Cpu {
            daemons: per(self.daemons, before.daemons),
            postgres: per(self.postgres, before.postgres),
            drivers: per(self.drivers, before.drivers),
            machine: per(self.machine, before.machine),
            busy: sampler.busy(start, end),
        }
    }
}

/// Busy CPU seconds of the whole machine so far, every core: from the
/// first line of /proc/stat (ticks: user, nice, system, idle, iowait, irq,
/// softirq, steal, then guest time, counted in user already), all but
/// idle, iowait and steal.
fn machine_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy_ticks: f64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i < 7 && *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    busy_ticks / hz
}

/// The machine's busy CPU sampled every 10 ms by a thread of its own, so
/// that "machine busy" is taken over a run's own window (its lanes'
/// common start to their end), not over the lanes' start-up and their
/// wait for the start before it.
struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    samples: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, f64)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start() -> Sampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, v) = (stop.clone(), samples.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                let sample = (std::time::Instant::now(), machine_seconds());
                v.lock().unwrap_or_else(|p| p.into_inner()).push(sample);
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        });
        Sampler {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    /// The machine's busy share of all its cores between the first sample
    /// at or after `start` and the last one at or before `end`.
    fn busy(&self, start: std::time::Instant, end: std::time::Instant) -> f64 {
        let v = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let first = v.iter().find(|(t, _)| *t >= start);
        let last = v.iter().rev().find(|(t, _)| *t <= end);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        match (first, last) {
            (Some((t0, c0)), Some((t1, c1))) if t1 > t0 => {
                (c1 - c0) / ((*t1 - *t0).as_secs_f64() * cores)
            }
            _ => 0.0,
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// From the server's log lines `duration: X ms  STEP NAME: SQL`, per
/// statement and protocol step (parse, bind, execute): how many per login
/// and the server's mean time for each.
fn statement_durations(log: &str, logins: usize) {
    let mut by: std::collections::BTreeMap<String, (usize, f64)> = Default::default();
    for line in log.lines() {
        let Some((_, rest)) = line.split_once("duration: ") else {
            continue;
        };
        let Some((ms, what)) = rest.split_once(" ms  ") else {
            continue;
        };
        let Ok(ms) = ms.parse::<f64>() else { continue };
        // "execute s3: SELECT ..." -> "execute: SELECT ..." (names vary by connection).
        let what = match what.split_once(": ") {
            Some((step, sql)) => format!(
                "{} {}",
                step.split_whitespace().next().unwrap_or(step),
                sql.chars().take(60).collect::<String>()
            ),
            None => what.chars().take(70).collect(),
        };
        let e = by.entry(what).or_default();
        e.0 += 1;
        e.1 += ms;
    }
    println!(
        "\nThe server's time per statement (log_min_duration_statement = 0), sequential rounds, {logins} logins on the database\n"
    );
    println!("| step and statement | per login | server mean |");
    println!("| --- | --- | --- |");
    for (what, (n, ms)) in &by {
        println!(
            "| `{what}` | {:.2} | {:.3} ms |",
            *n as f64 / logins.max(1) as f64,
            ms / *n as f64
        );
    }
}
