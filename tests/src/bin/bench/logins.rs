//! `twofold-bench` (no argument): latency, throughput, CPU, the race and the footprint through real libpam.

use super::*;

/// `make bench`: one verification through each module, concurrency, the
/// race check and the module's footprint.
pub(crate) fn pam() -> Result<()> {
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
    // What libpam and the host cost with no second factor (pam_permit
    // alone, the same logins): the part of the host's CPU no module removes.
    let cpu_before = children_cpu_seconds();
    m.run(PERMIT, &per_module[0])?;
    let permit_ms = (children_cpu_seconds() - cpu_before) * 1000.0 / per_module[0].len() as f64;
    println!(
        "host CPU per login with pam_permit alone (libpam, libaudit, pam-driver): {permit_ms:.3} ms, \
         so pam_twofold's own part of the host's: {:.3} ms",
        per_login(split[0]) - permit_ms
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

/// 64 processes at once; every TOTP code and every backup code of `users`
/// is typed by two processes at the same moment, and a second backup code
/// of each user by a third beside them. Exactly one of each pair must get
/// in, every second backup code must get in (no use lost to a concurrent
/// write), and afterwards no used backup code works again.
pub(crate) fn race(m: &Modules, users: &[usize]) -> Result<()> {
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
pub(crate) fn footprint(m: &Modules, spare: usize) -> Result<()> {
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
