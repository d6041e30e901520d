//! One local user floods twofoldd from many connections at once, with the
//! costliest calls a user may make and oversized arguments; root's logins
//! (the PAM stack's calls) must keep working meanwhile. Their latency before
//! and during the flood is printed (a figure for docs/security.md, not a timed
//! assertion).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::time::{Duration, Instant};
use twofold_e2e::*;
use twofoldd::limits::{BURST_PER_UID, INTERVAL_MS_PER_UID};

const FLOODER: &str = "tf-bob";
const USERS: [&str; 3] = ["tf-alice", "tf-carol", "tf-dave"];
const FLOOD_SECS: u64 = 10;
const CONNECTIONS: u32 = 16;

/// The floods take both cores of a small machine: one at a time.
static ONE_FLOOD_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_flood_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_FLOOD_AT_A_TIME
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The flooder's one-line tally, once it has ended successfully.
fn flood_report(flood: std::process::Child) -> String {
    let out = flood.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    report
}

/// Root's PAM login of `user` with `code`, which must succeed; its time.
fn timed_login(pam: &PamService, bus: &Bus, user: &str, code: &str) -> Duration {
    let t = Instant::now();
    let a = pam
        .login(bus, user, format!("{code}\n").as_bytes())
        .unwrap();
    assert_eq!(a.code, pam::SUCCESS, "root's login of {user} failed: {a:?}");
    t.elapsed()
}

fn median_and_max(mut v: Vec<Duration>) -> (u128, u128) {
    v.sort();
    (v[v.len() / 2].as_millis(), v[v.len() - 1].as_millis())
}

#[test]
fn a_flooding_user_is_held_to_their_limits_and_roots_logins_keep_working() {
    let _one = one_flood_at_a_time();
    test_user(FLOODER).unwrap();
    for u in USERS {
        test_user(u).unwrap();
    }
    let bus = Bus::start().unwrap();
    let daemon = Daemon::start(&bus, "").unwrap();
    let pam = PamService::new("").unwrap();
    // Backup codes: single use, so each login below has a fresh right code.
    let mut codes: Vec<(&str, String)> = USERS
        .iter()
        .flat_map(|&u| {
            let e = enroll(&bus, u).unwrap();
            e.backup_codes.into_iter().map(move |c| (u, c))
        })
        .collect();
    let mut login = || {
        let (user, code) = codes.pop().expect("enough backup codes");
        timed_login(&pam, &bus, user, &code)
    };
    let before: Vec<Duration> = (0..5).map(|_| login()).collect();

    let flood = bus
        .command_as(FLOODER, artifacts().bin.join("twofold-flood"))
        .args([FLOOD_SECS.to_string(), CONNECTIONS.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let cpu = |pid: Option<u32>| cpu_time(pid.unwrap()).unwrap();
    let (bus_cpu, daemon_cpu) = (cpu(Some(bus.pid())), cpu(daemon.pid()));
    let started = Instant::now();
    let mut during = Vec::new();
    while started.elapsed() < Duration::from_secs(FLOOD_SECS - 2) {
        during.push(login());
        std::thread::sleep(Duration::from_millis(500));
    }
    let (bus_cpu, daemon_cpu) = (
        cpu(Some(bus.pid())) - bus_cpu,
        cpu(daemon.pid()) - daemon_cpu,
    );
    let spent = started.elapsed().as_secs_f64();
    let report = flood_report(flood);
    let field = |name: &str| -> u64 {
        report
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {report:?}"))
    };
    let (b, d) = (median_and_max(before), median_and_max(during.clone()));
    eprintln!(
        "flood by one user over {CONNECTIONS} connections for {FLOOD_SECS} s: {report}\n\
         root's logins before: median {} ms, max {} ms; during ({} logins): median {} ms, max {} ms\n\
         CPU during the flood: dbus-daemon {:.0} %, twofoldd {:.0} % (of one core)",
        b.0,
        b.1,
        during.len(),
        d.0,
        d.1,
        bus_cpu.as_secs_f64() * 100.0 / spent,
        daemon_cpu.as_secs_f64() * 100.0 / spent
    );
    assert!(
        during.len() >= 10,
        "{} logins during the flood",
        during.len()
    );
    assert_eq!(field("failed"), 0, "{report}");
    // Everything past the burst and the steady rate was turned away at once...
    let allowed = u64::from(BURST_PER_UID) + (FLOOD_SECS + 1) * 1000 / INTERVAL_MS_PER_UID;
    assert!(field("served") <= allowed, "{report}");
    assert!(
        field("busy") > 10 * allowed,
        "the flood was not a flood: {report}"
    );
    // ...and oversized calls were refused before the caller was even
    // looked up (so they spend none of its rate), never worked on.
    assert!(field("refused") > 0, "{report}");
    assert!(
        daemon.log().contains("oversized-calls refused="),
        "{}",
        daemon.log()
    );
    // One log line a minute per uid, not one per refused call.
    let lines = daemon.log().matches("caller-limited caller_uid=").count();
    assert_eq!(lines, 1, "{}", daemon.log());
}

/// The large-message attack: an unprivileged user sends, from 40
/// connections and without reading any answer, calls whose bodies are 30 MB
/// (the system bus carries up to 32 MiB), for 30 s. twofoldd refuses each
/// at once, before it asks the bus who sent it; its memory comes back
/// afterwards, and root's logins keep working throughout.
#[test]
fn large_messages_leave_no_memory_behind_and_roots_logins_keep_working() {
    let _one = one_flood_at_a_time();
    const SECS: u64 = 30;
    const LARGE_CONNECTIONS: u32 = 40;
    const BODY_BYTES: u64 = 30_000_000;
    const FLOODER: &str = "tf-mallory";
    const OWNER: &str = "tf-erin";
    test_user(FLOODER).unwrap();
    test_user(OWNER).unwrap();
    let bus = Bus::start().unwrap();
    let daemon = Daemon::start(&bus, "").unwrap();
    let pam = PamService::new("").unwrap();
    let mut codes = enroll(&bus, OWNER).unwrap().backup_codes;
    let mut login = || {
        let code = codes.pop().expect("enough backup codes");
        timed_login(&pam, &bus, OWNER, &code)
    };
    login();
    let rss = || proc_status_field(daemon.pid(), "VmRSS");
    let rss_before = rss();

    let flood = bus
        .command_as(FLOODER, artifacts().bin.join("twofold-flood"))
        .args([
            SECS.to_string(),
            LARGE_CONNECTIONS.to_string(),
            BODY_BYTES.to_string(),
            "large".to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let (mut rss_peak, mut during) = (0, Vec::new());
    std::thread::sleep(Duration::from_secs(2));
    while started.elapsed() < Duration::from_secs(SECS - 4) {
        // Ten backup codes: one before, eight during, one after.
        if during.len() < 8 {
            during.push(login());
        }
        rss_peak = rss_peak.max(rss());
        std::thread::sleep(Duration::from_secs(2));
    }
    let report = flood_report(flood);
    // The memory comes back within 5 s of the flood's end.
    let ended = Instant::now();
    let mut rss_after = rss();
    while rss_after > rss_before + RSS_SLACK_KIB && ended.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(200));
        rss_after = rss();
    }
    let d = median_and_max(during.clone());
    eprintln!(
        "large-message flood by one user over {LARGE_CONNECTIONS} connections for {SECS} s \
         ({BODY_BYTES} bytes a call): {report}\n\
         twofoldd RSS before {rss_before} KiB, peak seen {rss_peak} KiB, \
         {:.1} s after the end {rss_after} KiB\n\
         root's logins during ({} logins): median {} ms, max {} ms",
        ended.elapsed().as_secs_f64(),
        during.len(),
        d.0,
        d.1,
    );
    assert!(
        during.len() >= 2,
        "{} logins during the flood",
        during.len()
    );
    assert!(
        rss_after <= rss_before + RSS_SLACK_KIB,
        "twofoldd kept {rss_after} KiB (before the flood: {rss_before} KiB)"
    );
    // Still serving, and the user's own small calls still answered.
    login();
    let status = bus
        .command_as(FLOODER, artifacts().twofold())
        .arg("status")
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
}

/// One local user on the login socket: a thousand connections at a time,
/// silent ones, half authentications, and 100 MB messages, reopened as they
/// are closed, for 12 s. The user holds at most its cap of connections;
/// each oversized message ends its connection after the 16-byte header, so
/// twofoldd's memory stays where it was; root's logins (on the same socket)
/// succeed throughout.
#[test]
fn a_user_flooding_the_login_socket_holds_its_cap_and_roots_logins_keep_working() {
    use twofoldd::bus::pool::MAX_CONNECTIONS_PER_UID;
    use twofoldd::bus::socket::HANDSHAKE_DEADLINE;
    let _one = one_flood_at_a_time();
    const SECS: u64 = 12;
    const FLOODER: &str = "tf-oscar";
    test_user(FLOODER).unwrap();
    for u in USERS {
        test_user(u).unwrap();
    }
    let bus = Bus::start().unwrap();
    let daemon = Daemon::start(&bus, "").unwrap();
    let pam = PamService::new("").unwrap();
    let mut codes: Vec<(&str, String)> = USERS
        .iter()
        .flat_map(|&u| {
            let e = enroll(&bus, u).unwrap();
            e.backup_codes.into_iter().map(move |c| (u, c))
        })
        .collect();
    let mut login = || {
        let (user, code) = codes.pop().expect("enough backup codes");
        timed_login(&pam, &bus, user, &code)
    };
    let before: Vec<Duration> = (0..3).map(|_| login()).collect();
    let rss = || proc_status_field(daemon.pid(), "VmRSS");
    let rss_before = rss();

    let flood = bus
        .command_as(FLOODER, artifacts().bin.join("twofold-flood"))
        .args([
            SECS.to_string(),
            "1000".into(),
            "100000000".into(),
            "socket".into(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let (mut rss_peak, mut during) = (0, Vec::new());
    std::thread::sleep(Duration::from_secs(1));
    while started.elapsed() < Duration::from_secs(SECS - 2) {
        during.push(login());
        rss_peak = rss_peak.max(rss());
        std::thread::sleep(Duration::from_millis(400));
    }
    let report = flood_report(flood);
    let field = |name: &str| -> u64 {
        report
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {report:?}"))
    };
    let (b, d) = (median_and_max(before), median_and_max(during.clone()));
    eprintln!(
        "login-socket flood by one user for {SECS} s: {report}
         twofoldd RSS before {rss_before} KiB, peak seen {rss_peak} KiB
         root's logins before: median {} ms, max {} ms; during ({} logins): median {} ms, max {} ms",
        b.0,
        b.1,
        during.len(),
        d.0,
        d.1
    );
    assert!(
        during.len() >= 10,
        "{} logins during the flood",
        during.len()
    );
    // Held at its cap: every connection past it closed at once, and the
    // silent ones after the handshake deadline.
    assert!(
        field("held_max") <= MAX_CONNECTIONS_PER_UID as u64,
        "the user held more than {MAX_CONNECTIONS_PER_UID} connections: {report}"
    );
    assert!(
        field("opened") + field("failed") > 20 * MAX_CONNECTIONS_PER_UID as u64,
        "the flood was not a flood: {report}"
    );
    assert!(HANDSHAKE_DEADLINE < Duration::from_secs(SECS));
    assert!(
        rss_peak <= rss_before + RSS_SLACK_KIB,
        "twofoldd grew to {rss_peak} KiB (before the flood: {rss_before} KiB)"
    );
    let log = daemon.log();
    assert!(log.contains("login-socket-full caller_uid="), "{log}");
    assert!(log.contains("oversized-calls refused="), "{log}");
    // One line a minute, not one per refused connection.
    assert_eq!(log.matches("login-socket-full").count(), 1, "{log}");
}

/// How far above its RSS before a flood twofoldd may stay after it.
const RSS_SLACK_KIB: u64 = 8 * 1024;

/// Users who hold connections to the login socket until the users' pool is
/// full (16 accounts, 16 idle connections each, reopened as they are
/// closed) leave a slot for everyone else: another user's screen locker
/// and `su` still log in, one held at its code prompt while the holder whose
/// slot it took tries to take it back, and root's logins too; each of the
/// users' logins closes one holder's connection, root's none; the holders
/// never hold more than the pool, and twofoldd's threads and memory stay
/// bounded.
#[test]
fn users_holding_the_whole_pool_leave_a_slot_for_anyone_elses_login() {
    use std::io::BufRead;
    use std::sync::{Arc, Mutex};
    use twofoldd::bus::pool::{MAX_CONNECTIONS_PER_UID, MAX_USER_CONNECTIONS};
    use twofoldd::bus::socket::HANDSHAKE_DEADLINE;
    let _one = one_flood_at_a_time();
    const HOLDERS: usize = MAX_USER_CONNECTIONS / MAX_CONNECTIONS_PER_UID;
    const ALICE: &str = "tf-alice";
    const CAROL: &str = "tf-carol";
    const DAVE: &str = "tf-dave";
    let holders: Vec<String> = (0..HOLDERS).map(|i| format!("tf-hold{i:02}")).collect();
    for u in holders
        .iter()
        .map(String::as_str)
        .chain([ALICE, CAROL, DAVE])
    {
        test_user(u).unwrap();
    }
    let bus = Bus::start().unwrap();
    let daemon = Daemon::start(&bus, "").unwrap();
    let pam = PamService::new("").unwrap();
    let mut alice = enroll(&bus, ALICE).unwrap().backup_codes;
    let mut dave = enroll(&bus, DAVE).unwrap().backup_codes;
    let line = |code: String| format!("{code}\n").into_bytes();
    let usual = timed_login(&pam, &bus, DAVE, &dave.pop().unwrap());
    let threads = || proc_status_field(daemon.pid(), "Threads");
    let rss = || proc_status_field(daemon.pid(), "VmRSS");
    let (threads_before, rss_before) = (threads(), rss());

    // What each holder says: connections held now, and closed by twofoldd so far.
    let seen = Arc::new(Mutex::new(vec![(0usize, 0usize); HOLDERS]));
    let held = || seen.lock().unwrap().iter().map(|h| h.0).sum::<usize>();
    let closed = || seen.lock().unwrap().iter().map(|h| h.1).sum::<usize>();
    let mut running = Vec::new();
    for (i, user) in holders.iter().enumerate() {
        let mut child = bus
            .command_as(user, artifacts().bin.join("twofold-flood"))
            .args(["120", &MAX_CONNECTIONS_PER_UID.to_string(), "0", "hold"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let seen = seen.clone();
        let reader = std::thread::spawn(move || {
            let mut summary = String::new();
            for l in stdout.lines().map_while(Result::ok) {
                let number = |name: &str| -> Option<usize> {
                    l.split_whitespace()
                        .find_map(|kv| kv.strip_prefix(name))?
                        .parse()
                        .ok()
                };
                match (l.starts_with("held="), number("held="), number("closed=")) {
                    (true, Some(h), Some(c)) => seen.lock().unwrap()[i] = (h, c),
                    _ => summary = l,
                }
            }
            summary
        });
        running.push((child, reader));
    }
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let t = Instant::now();
        while !done() {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{what}: the holders report {:?}\n{}",
                seen.lock().unwrap(),
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // The pool full again, after `n` of the holders' connections were closed.
    let full_after = |n: usize| {
        wait_for("the pool is not full as it should be", &|| {
            held() == MAX_USER_CONNECTIONS && closed() == n
        })
    };
    full_after(0);
    // Held, not just opened: still all there after the handshake deadline.
    std::thread::sleep(HANDSHAKE_DEADLINE + Duration::from_millis(500));
    full_after(0);
    let (threads_full, rss_full) = (threads(), rss());

    // Alice's screen locker (her own uid)...
    let t = Instant::now();
    let a = pam
        .login_as(&bus, ALICE, ALICE, &line(alice.pop().unwrap()))
        .unwrap();
    let locker = t.elapsed();
    assert_eq!(a.code, pam::SUCCESS, "the screen locker's login: {a:?}");
    full_after(1);
    // ...again, held at the code prompt while the holder whose slot it took
    // tries to take it back (every 100 ms, for a second)...
    let code = alice.pop().unwrap();
    let a = pam
        .login_as_answering(&bus, ALICE, ALICE, b"", || {
            wait_for("no holder gave a slot up", &|| closed() == 2);
            std::thread::sleep(Duration::from_secs(1));
            assert_eq!(
                (held(), closed()),
                (MAX_USER_CONNECTIONS - 1, 2),
                "a holder took the slot back"
            );
            line(code)
        })
        .unwrap();
    assert_eq!(a.code, pam::SUCCESS, "the login held at its prompt: {a:?}");
    full_after(2);
    // ...`su` run by Carol (counted in her pool)...
    let t = Instant::now();
    let a = pam
        .login_su(&bus, CAROL, ALICE, &line(alice.pop().unwrap()))
        .unwrap();
    let su = t.elapsed();
    assert_eq!(a.code, pam::SUCCESS, "su by another user: {a:?}");
    full_after(3);
    // ...and root's logins, from a pool of their own.
    let root = timed_login(&pam, &bus, DAVE, &dave.pop().unwrap());
    let (threads_after, rss_after) = (threads(), rss());
    std::thread::sleep(Duration::from_millis(300));
    full_after(3);

    let mut summaries = Vec::new();
    for (mut child, reader) in running {
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
        summaries.push(reader.join().unwrap());
    }
    let field = |report: &str, name: &str| -> usize {
        report
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {report:?}"))
    };
    eprintln!(
        "{HOLDERS} users holding {MAX_CONNECTIONS_PER_UID} login-socket connections each: \
         another user's screen locker {} ms, su {} ms, root's login {} ms (before: {} ms)\n\
         twofoldd threads {threads_before} before, {threads_full} with the pool full, \
         {threads_after} after the logins; RSS {rss_before} KiB, {rss_full} KiB, {rss_after} KiB",
        locker.as_millis(),
        su.as_millis(),
        root.as_millis(),
        usual.as_millis()
    );
    for r in &summaries {
        assert!(field(r, "held_max") <= MAX_CONNECTIONS_PER_UID, "{r}");
    }
    let total: usize = summaries.iter().map(|r| field(r, "closed")).sum();
    assert_eq!(total, 3, "{summaries:?}");
    for (what, took) in [("locker", locker), ("su", su), ("root", root)] {
        assert!(
            took < pam_twofold::daemon::HANDSHAKE_TIMEOUT,
            "{what}'s login took {took:?}"
        );
    }
    // A thread per held connection, and nothing per refused attempt.
    let bound = threads_before + MAX_USER_CONNECTIONS as u64 + 8;
    assert!(
        threads_full <= bound && threads_after <= bound,
        "{threads_full} and {threads_after} threads"
    );
    assert!(
        rss_after <= rss_before + MAX_USER_CONNECTIONS as u64 * 256,
        "twofoldd grew from {rss_before} KiB to {rss_after} KiB"
    );
    let log = daemon.log();
    assert!(log.contains("login-socket-shared caller_uid="), "{log}");
    // One line a minute, not one per connection closed.
    assert_eq!(log.matches("login-socket-shared").count(), 1, "{log}");
}
