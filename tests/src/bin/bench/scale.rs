//! `scale`, `report` and `memory`: the daemon with many enrolled users.

use super::*;

/// `twofold admin report` on a host with `users` accounts, half enrolled.
pub(crate) fn report(users: usize) -> Result<()> {
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

/// Users who log in at each size (accounts tfb0.. in nss_wrapper).
pub(crate) const LOGIN_USERS: usize = 100;

/// The daemon with 100, 100,000 and 1,000,000 enrolled users (or the sizes
/// given): its start time, resident memory idle and after logins and a
/// report, the latency of 200 logins by 100 users, and `twofold admin report`.
pub(crate) fn scale(sizes: &[usize]) -> Result<()> {
    use_release_build();
    let sizes = if sizes.is_empty() {
        vec![100, 100_000, 1_000_000]
    } else {
        sizes.to_vec()
    };
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
        let Level {
            started,
            idle,
            peak,
            f,
            c,
            report_secs,
        } = measure_level(&mut m, &control, level)?;
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

/// `memory`: twofoldd's resident memory (and the confirm step's latency)
/// around work that makes large, short-lived allocations: 50 enrollments, 5
/// at once (each hashes 10 backup codes with Argon2id, 19 MiB of working
/// memory per hash), then 10 more one at a time, then a local user's floods of
/// oversized calls (`twofold-flood`, 64 KiB and 1 MiB arguments). An idle
/// daemon should come back near its start after each.
pub(crate) fn memory() -> Result<()> {
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

/// What one size of the store comes to, measured the same way for the file
/// store (`scale`) and the database (`fleet-scale`).
pub(crate) struct Level {
    pub(crate) started: f64,
    pub(crate) idle: u64,
    pub(crate) peak: u64,
    pub(crate) f: Figures,
    pub(crate) c: Figures,
    pub(crate) report_secs: f64,
}

/// Restart `m`'s daemon (its start time: from spawn to the bus name owned,
/// caches cold for the daemon's own memory, not for the kernel's page
/// cache), then the logins of level `level`'s users in four rounds
/// alternating with `control` (the small store), then `twofold admin report`.
pub(crate) fn measure_level(m: &mut Modules, control: &Modules, level: usize) -> Result<Level> {
    let start = std::time::Instant::now();
    m.daemon.restart()?;
    let started = start.elapsed().as_secs_f64();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let pid = m.daemon.pid().context("daemon pid")?;
    let idle = proc_status_kib(pid, "VmRSS");
    let users: Vec<usize> = (level * LOGIN_USERS..(level + 1) * LOGIN_USERS).collect();
    let logins = m.totp_logins(&users)?;
    let control_logins = control.totp_logins(&users)?;
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
    Ok(Level {
        started,
        idle,
        peak,
        f,
        c,
        report_secs,
    })
}
