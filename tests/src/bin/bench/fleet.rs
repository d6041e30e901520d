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
    let mut wrong = 0;
    for in_flight in LEVELS {
        // The file store on one host.
        let users = accounts.take(per_run)?;
        let (outcomes, wall) = concurrent(files, TWOFOLD, &files.totp_logins(&users)?, in_flight)?;
        let f = figures(&outcomes, wall, 0.0);
        // The fleet: every code once.
        let users = accounts.take(per_run)?;
        let logins = first.totp_logins(&users)?;
        let mut lanes: Vec<Vec<usize>> = vec![Vec::new(); in_flight];
        for (k, (user, _)) in logins.iter().enumerate() {
            let u: usize = user.trim_start_matches("tfb").parse()?;
            lanes[u % in_flight].push(k);
        }
        let (outcomes, wall) = run_lanes_on(first, &buses, &logins, &lanes)?;
        let d = figures(&outcomes, wall, 0.0);
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
    if wrong != 0 {
        // What the daemons said of the logins they did not accept as
        // expected (neither accepted nor a replay refused).
        let logs = [first.daemon.log(), others[0].1.log(), others[1].1.log()];
        for (host, log) in logs.iter().enumerate() {
            for l in log.lines().filter(|l| {
                !(l.contains("outcome=accepted")
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
