//! `floor N`: what a login costs that twofold cannot remove (connect, empty calls, fdatasync, libpam).

use super::*;

/// What the bus itself costs a login: the module's transport (a zbus
/// connection with its authentication and `Hello`, two calls through
/// dbus-daemon to twofoldd, the connection dropped) with calls twofoldd
/// answers without its engine (`org.freedesktop.DBus.Peer.Ping`, handled by
/// zbus). Beside it, PAM logins with pam_permit alone (libpam in the host)
/// and with pam_twofold; then the bus-only round from 8 and 64 threads at
/// once, with the CPU each round costs all three processes and dbus-daemon.
pub(crate) fn floor(n: usize) -> Result<()> {
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
    // The same round as the module makes it: its own blocking connection,
    // no runtime, the authentication sent with the first call.
    let module_round = || -> Result<Vec<u64>> {
        let within = std::time::Duration::from_secs(5);
        let mut micros = Vec::with_capacity(n);
        for _ in 0..n {
            let start = std::time::Instant::now();
            let mut conn = pam_twofold::conn::Conn::open(&socket, within)?;
            for _ in 0..2 {
                let ping = zbus::Message::method_call(twofold_protocol::OBJECT_PATH, "Ping")
                    .interface("org.freedesktop.DBus.Peer")
                    .build(&())?;
                conn.call(&ping, within)?;
            }
            drop(conn);
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
        (
            "socket, the module's own connection (pam_twofold's conn.rs: the handshake goes with the first call): connect, 2 × Peer.Ping, close",
            module_round()?,
        ),
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
    // The floor: what a login through the module cannot do without (its
    // connection with two calls, one fdatasync, libpam), against the login.
    let median = |micros: &Vec<u64>| percentile(micros, 50.0) as f64 / 1000.0;
    let floor = median(&rows[4].1) + median(&rows[5].1) + median(&login_rows[0].1);
    let login = median(&login_rows[1].1);
    println!(
        "\nfloor (the module's connection with 2 calls + append & fdatasync + libpam): {floor:.3} ms; the login {login:.3} ms, {:.3} ms over it",
        login - floor
    );
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
