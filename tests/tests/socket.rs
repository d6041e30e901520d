//! Logins on twofoldd's login socket (a peer-to-peer D-Bus connection,
//! without the bus daemon) and the fall-back to the bus: logins keep
//! working while dbus-daemon is stopped or gone; without a socket the bus
//! path works as before; each failure gets the outcome pam_twofold(8)
//! documents (no socket and no bus: failmode; socket present but daemon
//! dead: the bus, then failmode; daemon hung: refused whatever the failmode);
//! and socket activation as systemd's `twofoldd.socket` does it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pam_twofold::daemon::HANDSHAKE_TIMEOUT;
use std::time::{Duration, Instant};
use twofold_e2e::*;

const ALICE: &str = "tf-alice";

fn line(code: &str) -> Vec<u8> {
    format!("{code}\n").into_bytes()
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on the pid of a process this test started.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
}

#[test]
fn logins_keep_working_while_the_bus_is_stopped_or_gone() {
    test_user(ALICE).unwrap();
    let bus = Bus::start().unwrap();
    let _daemon = Daemon::start(&bus, "").unwrap();
    let pam = PamService::new("").unwrap();
    let e = enroll(&bus, ALICE).unwrap();
    let mut codes = e.backup_codes.iter();

    // dbus-daemon stopped: the login does not wait for it.
    signal(bus.pid(), libc::SIGSTOP);
    let t = Instant::now();
    let a = pam.login(&bus, ALICE, &line(codes.next().unwrap()));
    let took = t.elapsed();
    signal(bus.pid(), libc::SIGCONT);
    let a = a.unwrap();
    assert_eq!(a.code, pam::SUCCESS, "{a:?}");
    assert!(
        took < HANDSHAKE_TIMEOUT,
        "the login took {took:?}: it waited for the stopped bus"
    );
    // The socket's connection leaves no thread or descriptor in the host.
    let (a, host) = pam
        .login_measuring_host(&bus, ALICE, &line(codes.next().unwrap()))
        .unwrap();
    assert_eq!(a.code, pam::SUCCESS, "{a:?}");
    assert_eq!(host["threads-before"], host["threads-after"], "{host:?}");
    assert_eq!(host["fds-before"], host["fds-after"], "{host:?}");

    // dbus-daemon gone: the same.
    signal(bus.pid(), libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(100));
    let a = pam
        .login(&bus, ALICE, &line(codes.next().unwrap()))
        .unwrap();
    assert_eq!(a.code, pam::SUCCESS, "{a:?}");
    // A wrong code is still refused, and a used one too.
    let a = pam.login(&bus, ALICE, &line(&e.backup_codes[0])).unwrap();
    assert_eq!(a.code, pam::AUTH_ERR, "{a:?}");
}

#[test]
fn without_the_socket_logins_go_through_the_bus() {
    test_user(ALICE).unwrap();
    let bus = Bus::start().unwrap();
    let _daemon = Daemon::start(&bus, "").unwrap();
    let pam = PamService::new("").unwrap();
    let e = enroll(&bus, ALICE).unwrap();
    bus.remove_login_socket().unwrap();
    let a = pam.login(&bus, ALICE, &line(&e.backup_codes[0])).unwrap();
    assert_eq!(a.code, pam::SUCCESS, "{a:?}");
    // It was the bus: with the bus stopped as well, nothing answers.
    signal(bus.pid(), libc::SIGSTOP);
    let a = pam.login(&bus, ALICE, &line(&e.backup_codes[1]));
    signal(bus.pid(), libc::SIGCONT);
    assert_eq!(a.unwrap().code, pam::AUTHINFO_UNAVAIL);
}

/// A stale socket (the daemon killed, nothing listening) is no daemon: the
/// module goes to the bus, whose answer that twofoldd is not there leaves
/// the login to failmode, as with no socket at all.
#[test]
fn a_socket_without_a_daemon_falls_back_to_the_bus_and_failmode() {
    test_user(ALICE).unwrap();
    let bus = Bus::start().unwrap();
    let mut daemon = Daemon::start(&bus, "").unwrap();
    let e = enroll(&bus, ALICE).unwrap();
    daemon.kill();
    assert!(bus.login_socket().exists(), "the socket file stays behind");
    let code = oathtool(&e.secret, 0).unwrap();
    let secure = PamService::new("").unwrap();
    let a = secure.login(&bus, ALICE, &line(&code)).unwrap();
    assert_eq!(a.code, pam::AUTHINFO_UNAVAIL, "{a:?}");
    let safe = PamService::new("failmode=safe").unwrap();
    let a = safe.login(&bus, ALICE, &line(&code)).unwrap();
    assert_eq!(a.code, pam::SUCCESS, "{a:?}");
    // Started again, the daemon replaces the stale socket.
    daemon.restart().unwrap();
    let a = secure.login(&bus, ALICE, &line(&code)).unwrap();
    assert_eq!(a.code, pam::SUCCESS, "{a:?}");
}

/// A daemon that is there but does not answer (stopped) holds a login for
/// `HANDSHAKE_TIMEOUT`, not for good, refuses it even under failmode=safe,
/// and leaves no thread behind in the host.
#[test]
fn a_hung_daemon_refuses_after_the_handshake_timeout_even_with_failmode_safe() {
    test_user(ALICE).unwrap();
    let bus = Bus::start().unwrap();
    let daemon = Daemon::start(&bus, "").unwrap();
    let e = enroll(&bus, ALICE).unwrap();
    let safe = PamService::new("failmode=safe").unwrap();
    let pid = daemon.pid().unwrap();
    signal(pid, libc::SIGSTOP);
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let _ = wait.recv_timeout(HANDSHAKE_TIMEOUT * 3);
        signal(pid, libc::SIGCONT);
    });
    let t = Instant::now();
    let a = safe.login_measuring_host(&bus, ALICE, &line(&e.backup_codes[0]));
    let waited = t.elapsed();
    drop(done);
    watchdog.join().unwrap();
    let (a, host) = a.unwrap();
    assert_eq!(a.code, pam::AUTHINFO_UNAVAIL, "{a:?}");
    assert_eq!(host["threads-before"], host["threads-after"], "{host:?}");
    assert_eq!(host["fds-before"], host["fds-after"], "{host:?}");
    assert!(
        waited >= HANDSHAKE_TIMEOUT && waited < HANDSHAKE_TIMEOUT * 2,
        "waited {waited:?}"
    );
    // Awake again, it answers; the code was not spent.
    let a = safe.login(&bus, ALICE, &line(&e.backup_codes[0])).unwrap();
    assert_eq!(a.code, pam::SUCCESS, "{a:?}");
}

/// Socket activation, as systemd's `twofoldd.socket` does it (here with
/// `systemd-socket-activate`, which passes the listening socket the same
/// way, `LISTEN_FDS`): no daemon runs until the first login connects; that
/// login starts it and is answered.
#[test]
fn the_first_login_on_an_activation_socket_starts_the_daemon() {
    const CAROL: &str = "tf-carol";
    test_user(CAROL).unwrap();
    let bus = Bus::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("twofold.toml");
    std::fs::write(
        &config,
        format!("state_dir = \"{}\"\n", dir.path().join("state").display()),
    )
    .unwrap();
    let init = std::process::Command::new(artifacts().twofoldd())
        .arg("--config")
        .arg(&config)
        .arg("--init")
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let socket = bus.login_socket();
    std::fs::create_dir(socket.parent().unwrap()).unwrap();
    let log = dir.path().join("twofoldd.log");
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _activator = Killed(
        std::process::Command::new("systemd-socket-activate")
            .arg(format!("--listen={}", socket.display()))
            .arg(format!("--setenv=DBUS_SYSTEM_BUS_ADDRESS={}", bus.address))
            .arg(artifacts().twofoldd())
            .arg("--config")
            .arg(&config)
            .arg("--log-stderr")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("systemd-socket-activate (apt-get install systemd)"),
    );
    let t = Instant::now();
    while !socket.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no activation socket"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!read_log().contains("started"), "{}", read_log());
    let pam = PamService::new("").unwrap();
    let a = pam.login(&bus, CAROL, b"").unwrap();
    assert_eq!(a.code, pam::SUCCESS, "{a:?}\n{}", read_log());
    assert!(a.stdout.contains("twofold setup"), "{a:?}");
    assert!(
        read_log().contains("and the login socket (from systemd)"),
        "{}",
        read_log()
    );
}
