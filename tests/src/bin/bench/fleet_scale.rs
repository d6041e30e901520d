//! `fleet-scale`: the daemon with many enrolled users in the database.

use super::*;

/// `twofold-bench fleet-scale [SIZE...]` (100 and 1,000,000 by default):
/// the database filled through the store's own code (`PgStore`, one
/// conditional insert per user, 8 stores writing at once; the server's
/// `synchronous_commit` off while it fills, as the file store's filler runs
/// under eatmydata: a fixture), then at each size the daemon's start time,
/// its resident memory, 200 logins by 100 users interleaved with a second
/// daemon on a small database of the same server, and `twofold admin report`.
pub(crate) fn fleet_scale(sizes: &[usize]) -> Result<()> {
    use_release_build();
    let sizes = if sizes.is_empty() {
        vec![100, 1_000_000]
    } else {
        sizes.to_vec()
    };
    const WRITERS: usize = 8;
    let db = Fleet::new()?;
    let small = Fleet::on(db.cluster.clone())?;
    let mut m = Modules::start_on(LOGIN_USERS * sizes.len(), Some(&db))?;
    let control = Modules::start_on(LOGIN_USERS * sizes.len(), Some(&small))?;
    print_machine();
    println!(
        "\nFleet scale: enrolled users in the database; 100 of them log in twice each (200 logins, one at a time)\n"
    );
    println!(
        "| enrolled | filled in | daemon start | RSS idle | RSS peak after logins and report | login median (against the first size) | login 99th percentile | small database at the same time (large against small) | `twofold admin report` | load average |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut filled = 0;
    let mut base_median = None;
    for (level, &n) in sizes.iter().enumerate() {
        let bulk = n.saturating_sub(LOGIN_USERS * sizes.len());
        let mut fill_secs = 0.0;
        if bulk > filled {
            let start = std::time::Instant::now();
            db.psql("ALTER SYSTEM SET synchronous_commit = off")?;
            db.psql("SELECT pg_reload_conf()")?;
            let cfg = db.store_config();
            let done = std::sync::atomic::AtomicUsize::new(0);
            std::thread::scope(|s| -> Result<()> {
                let workers: Vec<_> = (0..WRITERS)
                    .map(|w| {
                        let (cfg, done) = (&cfg, &done);
                        let (from, to) = (
                            filled + (bulk - filled) * w / WRITERS,
                            filled + (bulk - filled) * (w + 1) / WRITERS,
                        );
                        s.spawn(move || -> Result<()> {
                            let store = PgStore::new(cfg)?;
                            for i in from..to {
                                seed_with_backup(&store, &format!("tfs{i}"), 1 + i as u64, 0)?;
                                let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                if d % 100_000 == 99_999 {
                                    eprintln!(
                                        "{} enrollments written in {:.0} s",
                                        d + 1,
                                        start.elapsed().as_secs_f64()
                                    );
                                }
                            }
                            Ok(())
                        })
                    })
                    .collect();
                for w in workers {
                    w.join().map_err(|_| anyhow!("a writer panicked"))??;
                }
                Ok(())
            })?;
            db.psql("ALTER SYSTEM RESET synchronous_commit")?;
            db.psql("SELECT pg_reload_conf()")?;
            db.psql("CHECKPOINT")?;
            db.psql("VACUUM ANALYZE")?;
            fill_secs = start.elapsed().as_secs_f64();
            eprintln!(
                "filled the database to {bulk} + {} enrollments in {fill_secs:.0} s",
                LOGIN_USERS * sizes.len()
            );
            filled = bulk;
        }
        let count = db.psql("SELECT count(*) FROM twofold_enrollment")?;
        // The store checks the schema and the fleet key at start.
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
            "| {} | {} | {:.0} ms | {:.1} MiB | {:.1} MiB | {:.3} ms ({:+.0} %) | {:.3} ms | {:.3} ms ({:+.0} %) | {:.2} s | {} |",
            count.trim(),
            if fill_secs > 0.0 {
                format!("{fill_secs:.0} s")
            } else {
                String::new()
            },
            started * 1000.0,
            idle as f64 / 1024.0,
            peak as f64 / 1024.0,
            f.median_ms,
            (f.median_ms / base - 1.0) * 100.0,
            f.p99_ms,
            c.median_ms,
            (f.median_ms / c.median_ms - 1.0) * 100.0,
            report_secs,
            loadavg()
        );
    }
    println!(
        "\nThe report lists the accounts the name service knows ({} here, through nss_wrapper); \
         the other enrolled names have no account, so each costs a failed lookup.",
        LOGIN_USERS * sizes.len()
    );
    Ok(())
}
