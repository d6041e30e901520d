//! Least privilege on the bus and on the login socket: every method of the
//! interface, called by an unprivileged user about another user, through
//! the shipped D-Bus policy, and on a peer-to-peer connection to twofoldd's
//! socket (where the kernel names the caller, and only the login methods
//! are served: every other one is unknown there). The method list comes
//! from the daemon's own introspection data on the bus, so a new method
//! without a line here fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::process::Command;
use twofold_e2e::*;

const ALICE: &str = "tf-alice";
const DAVE: &str = "tf-dave";
const DEST: &str = twofold_protocol::BUS_NAME;
const PATH: &str = twofold_protocol::OBJECT_PATH;

/// What an unprivileged caller may get from a method about someone else.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// The daemon refuses it (org.twofold.Error.AccessDenied).
    Refused,
    /// It takes no user: it acts on the caller's own account only.
    OwnAccount,
}

/// Each method with dbus-send arguments naming Alice where it takes a user.
const METHODS: &[(&str, &[&str], Expect)] = &[
    (
        "BeginLogin",
        &["string:tf-alice", "string:sshd", "string:192.0.2.10"],
        Expect::Refused,
    ),
    (
        "Verify",
        &[
            "string:tf-alice",
            "string:123456",
            "string:sshd",
            "string:192.0.2.10",
        ],
        Expect::Refused,
    ),
    (
        "EnrollAtLogin",
        &["string:tf-alice", "string:sshd", "string:192.0.2.10"],
        Expect::Refused,
    ),
    (
        "ConfirmAtLogin",
        &["string:tf-alice", "string:123456"],
        Expect::Refused,
    ),
    (
        "SendLoginCode",
        &["string:tf-alice", "string:sshd", "string:192.0.2.10"],
        Expect::Refused,
    ),
    (
        "EmailEnrollAtLogin",
        &[
            "string:tf-alice",
            "string:dave@example.com",
            "string:sshd",
            "string:192.0.2.10",
        ],
        Expect::Refused,
    ),
    (
        "ConfirmEmailAtLogin",
        &["string:tf-alice", "string:123456"],
        Expect::Refused,
    ),
    ("AdminStatus", &["string:tf-alice"], Expect::Refused),
    ("AdminUnlock", &["string:tf-alice"], Expect::Refused),
    ("AdminReport", &[], Expect::Refused),
    ("AdminReportHosts", &[], Expect::Refused),
    (
        "AdminExplain",
        &["string:tf-alice", "string:sshd", "string:"],
        Expect::Refused,
    ),
    ("AdminReset", &["string:tf-alice"], Expect::Refused),
    (
        "AdminSetOverride",
        &["string:tf-alice", "string:exempt"],
        Expect::Refused,
    ),
    ("AdminForgetDevices", &["string:tf-alice"], Expect::Refused),
    ("AdminCheckPolicy", &["string:"], Expect::Refused),
    ("AdminReload", &[], Expect::Refused),
    (
        "AdminRemoveAuthenticator",
        &["string:tf-alice", "string:app"],
        Expect::Refused,
    ),
    ("BeginAuthenticator", &["string:phone"], Expect::OwnAccount),
    (
        "RemoveAuthenticator",
        &["string:app", "string:123456"],
        Expect::OwnAccount,
    ),
    ("BeginEnrollment", &[], Expect::OwnAccount),
    ("ConfirmEnrollment", &["string:123456"], Expect::OwnAccount),
    ("Status", &[], Expect::OwnAccount),
    (
        "RegenerateBackupCodes",
        &["string:123456"],
        Expect::OwnAccount,
    ),
    ("Disable", &["string:123456"], Expect::OwnAccount),
    (
        "BeginEmailEnrollment",
        &["string:dave@example.com"],
        Expect::OwnAccount,
    ),
    (
        "ConfirmEmailEnrollment",
        &["string:123456"],
        Expect::OwnAccount,
    ),
    ("Devices", &[], Expect::OwnAccount),
    ("ForgetDevices", &[], Expect::OwnAccount),
];

/// The interface's methods as twofoldd introspects itself on the bus.
fn interface_methods(bus: &Bus) -> BTreeSet<String> {
    let out = Command::new("dbus-send")
        .args([format!("--bus={}", bus.address), format!("--dest={DEST}")])
        .args(["--print-reply=literal", PATH])
        .arg("org.freedesktop.DBus.Introspectable.Introspect")
        .output()
        .unwrap();
    let xml = String::from_utf8_lossy(&out.stdout).into_owned();
    let ours = xml
        .split("<interface name=\"")
        .find(|part| part.starts_with(&format!("{DEST}\"")))
        .unwrap_or_else(|| panic!("no {DEST} interface in:\n{xml}"));
    let ours = ours.split("</interface>").next().unwrap();
    ours.split("<method name=\"")
        .skip(1)
        .map(|m| m.split('"').next().unwrap().to_string())
        .collect()
}

#[test]
fn every_method_on_the_bus_is_refused_or_limited_to_the_callers_own_account() {
    every_method_is_refused_or_limited_to_the_callers_own_account(false);
}

#[test]
fn every_method_on_the_socket_is_refused_or_limited_to_the_callers_own_account() {
    every_method_is_refused_or_limited_to_the_callers_own_account(true);
}

fn every_method_is_refused_or_limited_to_the_callers_own_account(on_socket: bool) {
    let send = |bus: &Bus, as_user: Option<&str>, method: &str, args: &[&str]| {
        if on_socket {
            bus.socket_send(as_user, method, args)
        } else {
            bus.dbus_send(as_user, method, args)
        }
    };
    for user in [ALICE, DAVE] {
        test_user(user).unwrap();
    }
    let bus = Bus::start().unwrap();
    let daemon = Daemon::start(&bus, "").unwrap();
    let alice = enroll(&bus, ALICE).unwrap();
    let status_before = bus.dbus_send(None, "AdminStatus", &["string:tf-alice"]);
    assert!(status_before.0, "{}", status_before.1);

    let tried: BTreeSet<String> = METHODS.iter().map(|(m, _, _)| m.to_string()).collect();
    let methods = interface_methods(&bus);
    assert_eq!(
        methods, tried,
        "the interface and this test's list differ: add each new method here"
    );
    // The socket serves the login methods only, and no introspection.
    let served = |method: &str| !on_socket || twofold_protocol::method::LOGIN.contains(&method);
    if on_socket {
        let out = Command::new("dbus-send")
            .arg(format!("--peer=unix:path={}", bus.login_socket().display()))
            .args(["--print-reply", PATH])
            .arg("org.freedesktop.DBus.Introspectable.Introspect")
            .output()
            .unwrap();
        let reply = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && reply.contains("org.freedesktop.DBus.Error.UnknownMethod"),
            "{reply}"
        );
    }

    for (method, args, expect) in METHODS {
        // Under the per-caller rate (a burst of 20, then one call per 100 ms).
        std::thread::sleep(std::time::Duration::from_millis(
            twofoldd::limits::INTERVAL_MS_PER_UID + 20,
        ));
        let (ok, reply) = send(&bus, Some(DAVE), method, args);
        if !served(method) {
            assert!(
                !ok && reply.contains("org.freedesktop.DBus.Error.UnknownMethod"),
                "{method} is not a login method, yet the socket did not refuse it as unknown: {reply}"
            );
            continue;
        }
        match expect {
            Expect::Refused => assert!(
                !ok && reply.contains("org.twofold.Error.AccessDenied"),
                "{method} was not refused to {DAVE}: {reply}"
            ),
            Expect::OwnAccount => {
                assert!(
                    !reply.contains("AccessDenied"),
                    "{method} refused {DAVE} their own account: {reply}"
                );
                assert!(
                    !reply.contains(ALICE),
                    "{method} told {DAVE} about {ALICE}: {reply}"
                );
            }
        }
    }
    // The enrollment begun was Dave's own (on the bus: the socket has no enrollment).
    let (_, offer) = bus.dbus_send(Some(DAVE), "BeginEnrollment", &[]);
    assert!(offer.contains("tf-dave"), "{offer}");
    assert!(!offer.contains(&alice.secret));

    // Alice's state is as it was: same status, no override, codes intact.
    let status_after = bus.dbus_send(None, "AdminStatus", &["string:tf-alice"]);
    // The values, without dbus-send's header line (time, serial).
    let values = |reply: &str| reply.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(values(&status_before.1), values(&status_after.1));
    let pam = PamService::new("").unwrap();
    let login = pam
        .login(
            &bus,
            ALICE,
            format!("{}\n", alice.backup_codes[0]).as_bytes(),
        )
        .unwrap();
    assert_eq!(login.code, pam::SUCCESS, "{login:?}");
    // Each refusal is logged with the caller's uid.
    let dave_uid = test_user(DAVE).unwrap();
    for (method, _, expect) in METHODS {
        if *expect == Expect::Refused && served(method) {
            let line = format!("access-denied caller_uid={dave_uid} method={method}");
            assert!(
                daemon.log().contains(&line),
                "{line} not in:\n{}",
                daemon.log()
            );
        }
    }
}
