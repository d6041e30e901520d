//! `fleet N`: logins with the PostgreSQL store beside the file store.

use super::*;

/// `twofold-bench fleet N`: a login through PAM with the store in a
/// PostgreSQL database (a server this run starts: `initdb` in a temporary
/// directory, a Unix socket, default settings, so `fsync` and
/// `synchronous_commit` on) beside the same with the file store, in the same
/// run: N logins each, one at a time in 3 interleaved rounds, then N at 8 in
/// flight.
pub(crate) fn fleet(n: usize) -> Result<()> {
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
