//! twofoldd as an administrator meets it: configuration errors and start-up checks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use twofold_e2e::*;

fn twofoldd_with_config(text: &str) -> (std::process::Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("twofold.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(artifacts().twofoldd())
        .arg("--config")
        .arg(&path)
        .arg("--check-config")
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent")
        .output()
        .unwrap();
    (out, dir)
}

#[test]
fn malformed_config_stops_the_daemon_with_file_line_and_reason() {
    for (text, line, words) in [
        ("[totp]\ndigits = \"six\"\n", 2, "invalid type"),
        ("[totp]\ndigits = 12\n", 2, "totp.digits must be 6, 7 or 8"),
        (
            "admin_group = \"x\"\n[throttle]\nfree_failure = 3\n",
            3,
            "unknown field",
        ),
        ("state_dir = /var\n", 1, ""),
    ] {
        let (out, dir) = twofoldd_with_config(text);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {err}");
        let expected = format!("{}:{line}:", dir.path().join("twofold.toml").display());
        assert!(
            err.contains(&expected) && err.contains(words),
            "{text:?}: {err}"
        );
    }
}

#[test]
fn a_named_config_that_is_missing_is_an_error() {
    let out = Command::new(artifacts().twofoldd())
        .args(["--config", "/nonexistent/twofold.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/twofold.toml: cannot read")
    );
}

#[test]
fn valid_config_is_accepted() {
    let (out, _dir) = twofoldd_with_config("[totp]\nissuer = \"Example Corp\"\nwindow = 0\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Example Corp"));
}

#[test]
fn refuses_a_state_directory_that_is_a_symlink() {
    let bus = Bus::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let config = dir.path().join("twofold.toml");
    std::fs::write(&config, format!("state_dir = \"{}\"\n", link.display())).unwrap();
    let out = bus
        .command(artifacts().twofoldd())
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unsafe state directory"),
        "{out:?}"
    );
}

#[test]
fn daemon_without_a_bus_exits_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("twofold.toml");
    std::fs::write(
        &config,
        format!("state_dir = \"{}\"\n", dir.path().join("state").display()),
    )
    .unwrap();
    let init = Command::new(artifacts().twofoldd())
        .arg("--config")
        .arg(&config)
        .arg("--init")
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let out = Command::new(artifacts().twofoldd())
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot serve on the system bus"),
        "{out:?}"
    );
}

#[test]
fn a_state_directory_that_was_never_initialized_is_refused() {
    let bus = Bus::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("twofold.toml");
    let state = dir.path().join("state");
    std::fs::write(&config, format!("state_dir = \"{}\"\n", state.display())).unwrap();
    let run = |init: bool| {
        let mut c = bus.command(artifacts().twofoldd());
        c.arg("--config").arg(&config);
        if init {
            c.arg("--init");
        }
        c.output().unwrap()
    };
    let out = run(false);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("twofoldd --init"),
        "{out:?}"
    );
    assert!(
        !state.exists(),
        "a missing state directory must not be created by a normal start"
    );
    let init = run(true);
    assert!(init.status.success(), "{init:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

#[test]
fn the_running_daemon_holds_no_capability_and_cannot_regain_one() {
    let bus = Bus::start().unwrap();
    let daemon = Daemon::start(&bus, "").unwrap();
    let pid = daemon.pid().unwrap();
    // Every thread, not only the first: capability sets are per thread.
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|t| t.unwrap().path())
        .collect();
    assert!(!tasks.is_empty());
    for task in tasks {
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        for field in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            let value = status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{field}:")))
                .unwrap()
                .trim();
            assert_eq!(value, "0000000000000000", "{field} of {}", task.display());
        }
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    }
    // No core file could hold a secret.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(
        core.split_whitespace().collect::<Vec<_>>()[4..6],
        ["0", "0"],
        "{core}"
    );
    assert!(
        daemon.log().contains("dropped every capability"),
        "{}",
        daemon.log()
    );
    // And it still does its job: an enrollment is stored and a code accepted.
    test_user("tf-alice").unwrap();
    let alice = enroll(&bus, "tf-alice").unwrap();
    let pam = PamService::new("").unwrap();
    let login = pam
        .login(
            &bus,
            "tf-alice",
            format!("{}\n", oathtool(&alice.secret, 0).unwrap()).as_bytes(),
        )
        .unwrap();
    assert_eq!(login.code, pam::SUCCESS, "{login:?}\n{}", daemon.log());
}

/// A host without a syslog daemon: the lines are appended to `log_file`
/// (root's, 0600) with the time, besides stderr.
#[test]
fn without_syslog_the_lines_go_to_the_log_file() {
    const USER: &str = "tf-nolog";
    test_user(USER).unwrap();
    let bus = Bus::start().unwrap();
    let mut daemon = Daemon::start(&bus, "").unwrap();
    daemon.restart_without_syslog().unwrap();
    let pam = PamService::new("").unwrap();
    // Not enrolled: the login's plan is logged either way.
    pam.login(&bus, USER, b"123456\n").unwrap();
    let fallback = daemon.fallback_log();
    let line = fallback
        .lines()
        .find(|l| l.contains(&format!("login user={USER}")))
        .unwrap_or_else(|| panic!("no login line in the log file:\n{fallback}"));
    // 2026-12-04T16:40:00Z twofoldd[PID]: info: login user=...
    assert!(
        line.len() > 21 && line.as_bytes()[10] == b'T' && line.contains(" twofoldd["),
        "{line}"
    );
    assert!(fallback.contains("started, serving"), "{fallback}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(daemon.state_dir().with_file_name("fallback.log"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
