//! A fleet of hosts on one PostgreSQL database (`[store] backend =
//! "postgresql"`): a real server started by the test (tests/src/postgres.rs),
//! twofoldd daemons each on its own private bus ("hosts") sharing it, logins
//! through real libpam with codes from oathtool. Also the store itself, two
//! `PgStore`s standing for two hosts: every write conditional, so a code is
//! accepted once in the whole fleet.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};
use twofold_e2e::postgres::{Cluster, Fleet};
use twofold_e2e::*;
use twofoldd::backup::{self, HashParams};
use twofoldd::store::{
    Enrollment, Event, FileStore, PgStore, SecretBytes, Store, StoreError, UserMeta,
};

const ALICE: &str = "tf-alice";

const FAST: HashParams = HashParams {
    m_cost_kib: 64,
    t_cost: 1,
    p_cost: 1,
};

fn enrollment(key: u8) -> Enrollment {
    let (_, backup) = backup::generate(5, FAST).unwrap();
    Enrollment {
        email: Some("alice@example.org".into()),
        last_step: Some(10),
        ..Enrollment::new(11, Some(SecretBytes(vec![key; 20])), (6, 30), backup, 1000)
    }
}

fn line(code: &str) -> Vec<u8> {
    format!("{code}\n").into_bytes()
}

fn conflict<T: std::fmt::Debug>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Conflict { .. }))
}

/// Two stores on one database: two hosts, as far as the store can tell.
fn two_stores(fleet: &Fleet) -> (PgStore, PgStore) {
    let cfg = fleet.store_config();
    let a = PgStore::new(&cfg).unwrap();
    assert_eq!(a.init().unwrap(), None, "created");
    let b = PgStore::new(&cfg).unwrap();
    assert_eq!(
        b.init().unwrap(),
        Some(twofoldd::store::postgres::SCHEMA_VERSION),
        "already there: checked"
    );
    b.check().unwrap();
    (a, b)
}

#[test]
fn every_write_is_conditional_so_a_race_between_hosts_has_one_winner() {
    let fleet = Fleet::new().unwrap();
    let (a, b) = two_stores(&fleet);
    assert!(a.load("alice").unwrap().is_none());
    let first = enrollment(1);
    a.write_enrollment("alice", None, &first).unwrap();
    // Enrolled on host A meanwhile: host B's first enrollment loses.
    assert!(conflict(b.write_enrollment("alice", None, &enrollment(2))));

    // A step: once.
    let (mut la, mut lb) = (
        a.load("alice").unwrap().unwrap(),
        b.load("alice").unwrap().unwrap(),
    );
    assert_eq!(la.enrollment, first);
    a.append(
        "alice",
        &mut la,
        Event::TotpAccepted {
            step: 100,
            at: 5,
            app: 0,
            drift: None,
        },
    )
    .unwrap();
    assert!(conflict(b.append(
        "alice",
        &mut lb,
        Event::TotpAccepted {
            step: 100,
            at: 5,
            app: 0,
            drift: None
        }
    )));
    assert!(conflict(b.append(
        "alice",
        &mut lb,
        Event::TotpAccepted {
            step: 99,
            at: 5,
            app: 0,
            drift: None
        }
    )));
    assert_eq!(
        b.load("alice").unwrap().unwrap().enrollment.last_step,
        Some(100)
    );

    // A backup code: once; another one still works from the old copy.
    let (mut la, mut lb) = (
        a.load("alice").unwrap().unwrap(),
        b.load("alice").unwrap().unwrap(),
    );
    a.append("alice", &mut la, Event::BackupUsed { index: 1, at: 6 })
        .unwrap();
    assert!(conflict(b.append(
        "alice",
        &mut lb,
        Event::BackupUsed { index: 1, at: 6 }
    )));
    b.append("alice", &mut lb, Event::BackupUsed { index: 2, at: 6 })
        .unwrap();
    let e = a.load("alice").unwrap().unwrap().enrollment;
    assert_eq!(e.backup.remaining(), 3);
    assert_eq!(e.last_login, Some(6));

    // The account-wide bucket: a failure counted against a bucket that moved is refused.
    let (mut la, mut lb) = (
        a.load("alice").unwrap().unwrap(),
        b.load("alice").unwrap().unwrap(),
    );
    a.append("alice", &mut la, Event::Failure { at: 7, ceiling: 50 })
        .unwrap();
    assert!(conflict(b.append(
        "alice",
        &mut lb,
        Event::Failure { at: 7, ceiling: 50 }
    )));
    let mut lb = b.load("alice").unwrap().unwrap();
    assert_eq!((lb.enrollment.ceiling_tat, lb.enrollment.failures), (50, 1));
    b.append("alice", &mut lb, Event::Failure { at: 8, ceiling: 80 })
        .unwrap();

    // Replacing the enrollment from a copy that is no longer the stored one.
    let stale = a.load("alice").unwrap().unwrap();
    let mut fresh = b.load("alice").unwrap().unwrap();
    b.append("alice", &mut fresh, Event::Unlock { at: 9 })
        .unwrap();
    let mut next = stale.enrollment.clone();
    next.generation = 12;
    assert!(conflict(a.write_enrollment("alice", Some(&stale), &next)));
    let fresh = b.load("alice").unwrap().unwrap();
    assert_eq!(fresh.enrollment.ceiling_tat, 0);
    a.write_enrollment("alice", Some(&fresh), &next).unwrap();
    // The old generation's events no longer apply.
    let mut old = fresh;
    assert!(conflict(b.append(
        "alice",
        &mut old,
        Event::TotpAccepted {
            step: 500,
            at: 9,
            app: 0,
            drift: None
        }
    )));

    // Sixteen logins at once, eight through each host, with the same step:
    // exactly one is recorded.
    let wins = std::sync::atomic::AtomicU32::new(0);
    std::thread::scope(|s| {
        for i in 0..16 {
            let (store, wins) = (if i % 2 == 0 { &a } else { &b }, &wins);
            s.spawn(move || {
                let mut l = store.load("alice").unwrap().unwrap();
                match store.append(
                    "alice",
                    &mut l,
                    Event::TotpAccepted {
                        step: 200,
                        at: 10,
                        app: 0,
                        drift: None,
                    },
                ) {
                    Ok(()) => {
                        wins.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            });
        }
    });
    assert_eq!(wins.into_inner(), 1);

    // The user's lock: host B waits while host A holds it.
    let held = a.lock_user("alice").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let _lock = b.lock_user("alice").unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx.recv_timeout(Duration::from_millis(500)).is_err());
        drop(held);
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
    });
    // Another user is not held up.
    let _alice = a.lock_user("alice").unwrap();
    drop(b.lock_user("bob").unwrap());

    // Metadata, removal, and the walk over every user (in pages).
    let meta = UserMeta {
        override_mode: Some(twofoldd::policy::Mode::Require),
        ..UserMeta::default()
    };
    b.write_meta("bob", &meta, 0).unwrap();
    assert_eq!(a.load_meta("bob").unwrap(), meta);
    assert_eq!(a.load_meta("carol").unwrap(), UserMeta::default());
    fleet
        .psql("INSERT INTO twofold_meta SELECT 'u' || g, '{}' FROM generate_series(1, 2500) g")
        .unwrap();
    assert_eq!(a.users().unwrap().len(), 2 + 2500);
    a.remove_enrollment("alice").unwrap();
    assert!(b.load("alice").unwrap().is_none());
    assert!(matches!(a.load("../x"), Err(StoreError::BadName(_))));
}

#[test]
fn secrets_are_sealed_at_rest_and_another_key_is_refused_never_not_enrolled() {
    let fleet = Fleet::new().unwrap();
    let (a, _) = two_stores(&fleet);
    a.write_enrollment("alice", None, &with_apps(0x5a)).unwrap();
    a.write_enrollment("bob", None, &with_apps(0x6b)).unwrap();

    // A dump of the database: no key (of any app), no address in clear.
    let dump = fleet.dump().unwrap();
    assert!(dump.contains("twofold_enrollment"), "{dump}");
    assert!(dump.contains("laptop"), "the dump holds the apps: {dump}");
    let mut needles = vec!["alice@example.org".to_string()];
    for user in ["alice", "bob"] {
        let e = a.load(user).unwrap().unwrap().enrollment;
        assert_eq!(e.app_list().len(), 3);
        for app in e.app_list() {
            needles.push(hex::encode(&app.secret.0));
            needles.push(totp_rs::Secret::from(&app.secret.0[..]).to_base32());
        }
    }
    for needle in needles {
        assert!(!dump.contains(&needle), "{needle} in the dump");
    }

    // A second app's sealed key moved to the other app's place does not open.
    fleet
        .psql(
            "UPDATE twofold_enrollment SET app_secrets[2] = app_secrets[1] WHERE user_name = 'bob'",
        )
        .unwrap();
    let e = a.load("bob").unwrap_err();
    assert!(matches!(e, StoreError::Sealed { .. }), "{e}");
    a.remove_enrollment("bob").unwrap();
    a.write_enrollment("bob", None, &with_apps(0x6b)).unwrap();

    // A sealed key moved to another user's row does not open there.
    fleet
        .psql("UPDATE twofold_enrollment SET secret = (SELECT secret FROM twofold_enrollment WHERE user_name = 'alice') WHERE user_name = 'bob'")
        .unwrap();
    let e = a.load("bob").unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::Sealed {
                field: "secret",
                ..
            }
        ),
        "{e}"
    );

    // Another fleet key: refused at start, and per user, by name.
    let other = fleet.key_file().with_file_name("other.key");
    fleet.new_key(&other).unwrap();
    let mut cfg = fleet.store_config();
    cfg.fleet_key_file = other;
    let wrong = PgStore::new(&cfg).unwrap();
    let e = wrong.check().unwrap_err();
    assert!(matches!(e, StoreError::WrongKey(_)), "{e}");
    assert!(e.to_string().contains("copy the key file"), "{e}");
    let e = wrong.load("alice").unwrap_err();
    assert!(e.to_string().contains("fleet key"), "{e}");
}

#[test]
fn the_fleet_key_rotates_by_command_and_every_row_follows() {
    let fleet = Fleet::new().unwrap();
    let (old, _) = two_stores(&fleet);
    let alice = with_apps(1);
    old.write_enrollment("alice", None, &alice).unwrap();
    let old_id = old.key_id();

    // Step 1: a new key in front; hosts with the file seal with it and still open the old.
    let out = fleet.twofoldd(&["--rotate-fleet-key"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let both = PgStore::new(&fleet.store_config()).unwrap();
    both.check().unwrap();
    let new_id = both.key_id();
    assert_ne!(new_id, old_id);
    assert_eq!(
        both.load("alice").unwrap().unwrap().enrollment.secret,
        Some(SecretBytes(vec![1; 20]))
    );
    both.write_enrollment("bob", None, &enrollment(2)).unwrap();
    // A host not given the new file yet: bob refused, by the keys' names.
    let e = old.load("bob").unwrap_err();
    assert!(matches!(e, StoreError::Sealed { .. }), "{e}");
    assert!(e.to_string().contains(&new_id), "{e}");
    assert!(old.load("alice").is_ok());

    // Step 2: every row sealed again; the file keeps the new key alone.
    let out = fleet.twofoldd(&["--reseal"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("1 users sealed again, 1 already under"),
        "{text}"
    );
    let new = PgStore::new(&fleet.store_config()).unwrap();
    new.check().unwrap();
    assert_eq!(new.key_id(), new_id);
    for (user, key) in [("alice", 1), ("bob", 2)] {
        let e = new.load(user).unwrap().unwrap().enrollment;
        assert_eq!(e.secret, Some(SecretBytes(vec![key; 20])));
        assert_eq!(e.email.as_deref(), Some("alice@example.org"));
    }
    // Every app's key too: alice's opens with the new key alone.
    assert_eq!(new.load("alice").unwrap().unwrap().enrollment, alice);
    assert!(matches!(old.check(), Err(StoreError::WrongKey(_))));
    assert!(old.load("alice").is_err());
    // Again: nothing to do.
    let out = fleet.twofoldd(&["--reseal"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("0 users sealed again, 2 already"), "{text}");
}

#[test]
fn copying_a_host_into_the_database_and_back_keeps_every_use() {
    let fleet = Fleet::new().unwrap();
    let (db, _) = two_stores(&fleet);
    let dir = tempfile::tempdir().unwrap();
    let files = FileStore::init(&dir.path().join("a")).unwrap();
    files
        .write_enrollment("alice", None, &enrollment(1))
        .unwrap();
    let mut l = files.load("alice").unwrap().unwrap();
    files
        .append(
            "alice",
            &mut l,
            Event::TotpAccepted {
                step: 77,
                at: 3,
                app: 0,
                drift: None,
            },
        )
        .unwrap();
    files
        .append("alice", &mut l, Event::BackupUsed { index: 4, at: 3 })
        .unwrap();
    let meta = UserMeta {
        override_mode: Some(twofoldd::policy::Mode::Exempt),
        ..UserMeta::default()
    };
    files.write_meta("bob", &meta, 0).unwrap();
    // Carol: three apps, offsets, burned steps, a used backup code.
    files
        .write_enrollment("carol", None, &with_apps(3))
        .unwrap();
    let mut l = files.load("carol").unwrap().unwrap();
    for event in [
        Event::TotpAccepted {
            step: 88,
            at: 4,
            app: 2,
            drift: Some(-2),
        },
        Event::StepBurned {
            app: 0,
            step: 99,
            at: 4,
        },
        Event::BackupUsed { index: 1, at: 4 },
    ] {
        files.append("carol", &mut l, event).unwrap();
    }

    let r = twofoldd::store::copy::copy(&files, &db).unwrap();
    assert_eq!((r.copied, r.meta_copied), (2, 1), "{r}");
    assert_eq!(
        db.load("carol").unwrap().unwrap().enrollment,
        files.load("carol").unwrap().unwrap().enrollment
    );
    // Use made in the fleet meanwhile: an app's step, a burned step, a
    // backup code; copied out, it all comes back.
    let mut l = db.load("carol").unwrap().unwrap();
    for event in [
        Event::TotpAccepted {
            step: 95,
            at: 2000,
            app: 1,
            drift: Some(1),
        },
        Event::StepBurned {
            app: 2,
            step: 120,
            at: 2000,
        },
        Event::BackupUsed { index: 3, at: 2000 },
    ] {
        db.append("carol", &mut l, event).unwrap();
    }
    let in_fleet = db.load("carol").unwrap().unwrap().enrollment;
    let r = twofoldd::store::copy::copy(&files, &db).unwrap();
    assert_eq!((r.copied, r.unchanged, r.meta_copied), (0, 2, 0), "{r}");
    let back = FileStore::init(&dir.path().join("b")).unwrap();
    let r = twofoldd::store::copy::copy(&db, &back).unwrap();
    assert_eq!((r.copied, r.meta_copied), (2, 1), "{r}");
    assert_eq!(back.load("carol").unwrap().unwrap().enrollment, in_fleet);
    // Into the host it came from: merged, the fleet's use included.
    let r = twofoldd::store::copy::copy(&db, &files).unwrap();
    assert_eq!((r.merged, r.unchanged), (1, 1), "{r}");
    let mut merged = files.load("carol").unwrap().unwrap().enrollment;
    merged.generation = in_fleet.generation;
    assert_eq!(merged, in_fleet);
    let (mut was, now) = (
        files.load("alice").unwrap().unwrap().enrollment,
        back.load("alice").unwrap().unwrap().enrollment,
    );
    assert_eq!(now.last_step, Some(77));
    assert!(now.backup.hashes[4].is_none());
    assert_eq!(was.apps.first.last_used, Some(3));
    was.generation = now.generation;
    assert_eq!(now, was);
    assert_eq!(back.load_meta("bob").unwrap(), meta);
}

struct Host {
    bus: Bus,
    daemon: Daemon,
}

fn host(config: &str) -> Host {
    let bus = Bus::start().unwrap();
    let daemon = Daemon::start(&bus, config).unwrap();
    Host { bus, daemon }
}

fn enrolled(bus: &Bus, user: &str) -> bool {
    let out = bus.twofold(&["admin", "status", user, "--json"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"enrolled\":"), "{text}");
    text.contains("\"enrolled\":true")
}

#[test]
fn enrolled_on_one_host_a_code_works_once_in_the_whole_fleet() {
    test_user(ALICE).unwrap();
    let fleet = Fleet::new().unwrap();
    let hosts = [
        host(&fleet.config()),
        host(&fleet.config()),
        host(&fleet.config()),
    ];
    let [a, b, c] = &hosts;
    let pam = PamService::new("").unwrap();
    let e = enroll(&a.bus, ALICE).unwrap();
    assert!(enrolled(&b.bus, ALICE) && enrolled(&c.bus, ALICE));

    let code = oathtool(&e.secret, 0).unwrap();
    let ok = pam.login(&b.bus, ALICE, &line(&code)).unwrap();
    assert_eq!(ok.code, pam::SUCCESS, "{ok:?}\n{}", b.daemon.log());
    for other in [a, c] {
        let again = pam.login(&other.bus, ALICE, &line(&code)).unwrap();
        assert_eq!(again.code, pam::AUTH_ERR, "{again:?}");
        assert!(again.stderr.contains("already used"), "{again:?}");
    }

    let backup = &e.backup_codes[0];
    assert_eq!(
        pam.login(&a.bus, ALICE, &line(backup)).unwrap().code,
        pam::SUCCESS
    );
    for other in [b, c] {
        let again = pam.login(&other.bus, ALICE, &line(backup)).unwrap();
        assert_eq!(again.code, pam::AUTH_ERR, "{again:?}");
        assert!(again.stderr.contains("already used"), "{again:?}");
    }

    // The next step's code, then a new backup code, typed at the same
    // instant on the three hosts, 64 logins in flight: one success each,
    // and every other login told the code was used.
    wait_for_step_margin(15);
    for code in [oathtool(&e.secret, 1).unwrap(), e.backup_codes[1].clone()] {
        let attempts: Vec<Attempt> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..64)
                .map(|i| {
                    let (bus, pam, code) = (&hosts[i % 3].bus, &pam, &code);
                    s.spawn(move || pam.login(bus, ALICE, &line(code)).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let wins = attempts.iter().filter(|a| a.code == pam::SUCCESS).count();
        let used = attempts
            .iter()
            .filter(|a| a.code == pam::AUTH_ERR && a.stderr.contains("already used"))
            .count();
        assert_eq!((wins, used), (1, 63), "{code}: {attempts:#?}");
    }

    // An administrator on host C resets; host A sees it at once.
    let out = c.bus.twofold(&["admin", "reset", ALICE, "--yes"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!enrolled(&a.bus, ALICE));
}

#[test]
fn the_account_wide_ceiling_is_the_fleets_not_each_hosts() {
    test_user(ALICE).unwrap();
    let fleet = Fleet::new().unwrap();
    let throttle = "[throttle]\nfree_failures = 50\nlockout_after = 100\nbase_delay_secs = 1\nmax_delay_secs = 1\n\
                    lockout_secs = 1\naccount_burst = 5\naccount_interval_secs = 3600\n";
    // A section ends at the next header: the throttle comes first.
    let config = format!("{throttle}{}", fleet.config());
    let (a, b) = (host(&config), host(&config));
    enroll(&a.bus, ALICE).unwrap();
    // Wrong codes from new addresses, in turn through each host: the bucket
    // holds 5, whichever host checks them.
    let mut checked = 0;
    for i in 0..12 {
        let bus = if i % 2 == 0 { &a.bus } else { &b.bus };
        let (ok, text) = bus.dbus_send(
            None,
            "Verify",
            &[
                "string:tf-alice",
                "string:000000",
                "string:sshd",
                &format!("string:198.51.100.{i}"),
            ],
        );
        assert!(ok, "{text}");
        if text.contains("Wrong code") {
            checked += 1;
        } else {
            assert!(text.contains("Too many wrong codes"), "{text}");
        }
    }
    assert_eq!(
        checked, 5,
        "the fleet checked {checked} guesses; one host would check 5"
    );

    // Unlocked on host A, full again on B; then 16 guesses at once, eight
    // through each host: still 5 checked (the user's lock in the database
    // orders the checks as one host's lock would).
    let out = a.bus.twofold(&["admin", "unlock", ALICE]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let replies: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let bus = if i % 2 == 0 { &a.bus } else { &b.bus };
                s.spawn(move || {
                    let (ok, text) = bus.dbus_send(
                        None,
                        "Verify",
                        &[
                            "string:tf-alice",
                            "string:000000",
                            "string:sshd",
                            &format!("string:203.0.113.{i}"),
                        ],
                    );
                    assert!(ok, "{text}");
                    text
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let checked = replies.iter().filter(|r| r.contains("Wrong code")).count();
    assert_eq!(checked, 5, "{replies:#?}");
}

/// The store's connections are driven only while a call runs on them
/// (each has its own runtime, which the calling thread drives): one that
/// sat idle in the pool while the server restarted is found closed before
/// it is handed out, so the first calls after the restart (a read, a
/// user's lock with its read, a write) succeed, none is refused for a
/// session that no longer exists.
#[test]
fn idle_connections_closed_by_a_database_restart_are_never_handed_out() {
    let cluster = std::sync::Arc::new(Cluster::start().unwrap());
    let fleet = Fleet::on(cluster.clone()).unwrap();
    let (store, _) = two_stores(&fleet);
    store.write_enrollment(ALICE, None, &enrollment(1)).unwrap();
    // Idle connections in both pools (statements, users' locks).
    let (lock, loaded) = store.lock_and_load(ALICE).unwrap();
    drop(lock);
    let mut loaded = loaded.unwrap();
    store.load(ALICE).unwrap().unwrap();
    cluster.stop("fast").unwrap();
    cluster.resume().unwrap();
    let (lock, again) = store.lock_and_load(ALICE).unwrap();
    assert_eq!(again.unwrap().revision, loaded.revision);
    store
        .append(
            ALICE,
            &mut loaded,
            Event::TotpAccepted {
                step: 11,
                at: 2000,
                app: 0,
                drift: None,
            },
        )
        .unwrap();
    drop(lock);
    let (meta, state) = store.load_meta_and_state(ALICE).unwrap();
    assert_eq!(meta, UserMeta::default());
    assert_eq!(state.unwrap().enrollment.last_step, Some(11));
}

#[test]
fn a_database_down_costs_a_login_a_bounded_time_and_the_daemon_recovers_by_itself() {
    test_user(ALICE).unwrap();
    let cluster = std::sync::Arc::new(Cluster::start().unwrap());
    let fleet = Fleet::on(cluster.clone()).unwrap();
    let bus = Bus::start().unwrap();
    let daemon =
        Daemon::start_with_policy(&bus, &fleet.config(), "[default]\nmode = \"optional\"\n")
            .unwrap();
    let a = Host { bus, daemon };
    let pam = PamService::new("").unwrap();
    let e = enroll(&a.bus, ALICE).unwrap();
    let pid = a.daemon.pid();
    let check = || {
        let out = a.bus.twofold(&["admin", "check-config"]).unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ready = check();
    assert!(
        ready.contains(
            "Store: the PostgreSQL database answers; schema version 2; this host's fleet key"
        ),
        "{ready}"
    );

    cluster.stop("fast").unwrap();
    // check-config says so, and what is wrong.
    let down = check();
    assert!(down.contains(": valid;"), "the policy is fine: {down}");
    assert!(down.contains("Store: NOT READY: database: "), "{down}");
    let started = Instant::now();
    let r = pam
        .login(&a.bus, ALICE, &line(&oathtool(&e.secret, 0).unwrap()))
        .unwrap();
    let took = started.elapsed();
    // The documented answer: the daemon was asked and could not check the
    // code, so the login is refused whatever the failmode.
    assert_eq!(r.code, pam::AUTH_ERR, "{r:?}");
    assert!(r.stderr.contains("cannot read or write its state"), "{r:?}");
    // connect (3 s) + statement (3 s) per store call, far under the module's 20 s.
    assert!(took < Duration::from_secs(10), "{took:?}");
    // Logged as this login's refusal, naming whose and what failed.
    let log = a.daemon.log();
    assert!(
        log.lines().any(
            |l| l.contains(&format!("login user={ALICE} service={} ", pam.name))
                && l.contains("outcome=refused-internal-error: state error: database: ")
        ),
        "{log}"
    );

    cluster.resume().unwrap();
    wait_for_step_margin(20);
    let ok = pam
        .login(&a.bus, ALICE, &line(&oathtool(&e.secret, 0).unwrap()))
        .unwrap();
    assert_eq!(ok.code, pam::SUCCESS, "{ok:?}\n{}", a.daemon.log());

    // A server that takes the connection and never answers (every process
    // stopped): the deadline answers instead.
    cluster.freeze(true).unwrap();
    let started = Instant::now();
    let r = pam.login(&a.bus, ALICE, &line(&oathtool(&e.secret, 1).unwrap()));
    let took = started.elapsed();
    cluster.freeze(false).unwrap();
    let r = r.unwrap();
    assert_eq!(r.code, pam::AUTH_ERR, "{r:?}");
    assert!(r.stderr.contains("cannot read or write its state"), "{r:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(
        a.daemon.log().contains("no answer within 6 s"),
        "{}",
        a.daemon.log()
    );
    let ok = pam
        .login(&a.bus, ALICE, &line(&oathtool(&e.secret, 1).unwrap()))
        .unwrap();
    assert_eq!(ok.code, pam::SUCCESS, "{ok:?}\n{}", a.daemon.log());
    assert_eq!(a.daemon.pid(), pid, "no restart");
    eprintln!("a frozen database: the login refused after {took:?}");
}

/// twofoldd's threads (`/proc/PID/task`).
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The server's sessions opened by twofoldd (its `application_name`).
fn sessions(fleet: &Fleet) -> usize {
    fleet
        .psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'twofoldd'")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The database going away and coming back, again and again, with logins
/// in flight (a stream of backup codes, and users not enrolled, whose
/// login reads the store too): twofoldd's threads and its sessions on the
/// server stay bounded, and are back near where they started after each
/// cycle: nothing accumulates per outage.
#[test]
fn repeated_database_outages_leak_no_thread_and_no_connection() {
    const POOL: usize = 4;
    const USERS: [&str; 3] = ["tf-fo0", "tf-fo1", "tf-fo2"];
    for u in USERS {
        test_user(u).unwrap();
    }
    let cluster = std::sync::Arc::new(Cluster::start().unwrap());
    let fleet = Fleet::on(cluster.clone()).unwrap();
    let a = host(&format!("{}pool_size = {POOL}\n", fleet.config()));
    let pid = a.daemon.pid().unwrap();
    let pam = PamService::new("").unwrap();
    let store = PgStore::new(&fleet.store_config()).unwrap();
    let mut e = enrollment(1);
    let (plain, set) = backup::generate(64, FAST).unwrap();
    e.backup = set;
    store.write_enrollment(USERS[0], None, &e).unwrap();
    store.remove_enrollment(USERS[1]).unwrap();
    store.remove_enrollment(USERS[2]).unwrap();
    drop(store);
    let codes: Vec<String> = plain.iter().map(|c| c.expose().to_string()).collect();

    let stop = std::sync::atomic::AtomicBool::new(false);
    let (ok, refused) = (
        std::sync::atomic::AtomicUsize::new(0),
        std::sync::atomic::AtomicUsize::new(0),
    );
    let (mut max_threads, mut max_sessions) = (0, 0);
    let mut cycles = Vec::new();
    std::thread::scope(|s| {
        let (stop, ok, refused, pam, a, codes) = (&stop, &ok, &refused, &pam, &a, &codes);
        let mut lanes = vec![s.spawn(move || {
            for code in codes {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let r = pam.login(&a.bus, USERS[0], &line(code)).unwrap();
                    if r.code == pam::SUCCESS {
                        ok.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        break;
                    }
                    if r.stderr.contains("already used") {
                        break;
                    }
                    refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        })];
        for user in &USERS[1..] {
            lanes.push(s.spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let r = pam.login(&a.bus, user, b"").unwrap();
                    if r.code == pam::SUCCESS {
                        ok.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    } else {
                        refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }));
        }
        let served = |n: usize| {
            let until = Instant::now() + Duration::from_secs(20);
            let from = ok.load(std::sync::atomic::Ordering::SeqCst);
            while ok.load(std::sync::atomic::Ordering::SeqCst) < from + n {
                assert!(
                    Instant::now() < until,
                    "no login served: {}",
                    a.daemon.log()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        served(10);
        let before = (threads(pid), sessions(&fleet));
        // Stopped, frozen, stopped: each time the logins in flight fail
        // (at once, or at the deadline), then succeed again.
        for (n, frozen) in [false, true, false].into_iter().enumerate() {
            if frozen {
                cluster.freeze(true).unwrap();
            } else {
                cluster.stop("fast").unwrap();
            }
            let down = Instant::now();
            while down.elapsed() < Duration::from_millis(if frozen { 6500 } else { 1500 }) {
                max_threads = max_threads.max(threads(pid));
                std::thread::sleep(Duration::from_millis(50));
            }
            if frozen {
                cluster.freeze(false).unwrap();
            } else {
                cluster.resume().unwrap();
            }
            served(10);
            max_threads = max_threads.max(threads(pid));
            let now = (threads(pid), sessions(&fleet));
            max_sessions = max_sessions.max(now.1);
            cycles.push((n, now));
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for l in lanes {
            l.join().unwrap();
        }
        let refused = refused.load(std::sync::atomic::Ordering::SeqCst);
        eprintln!(
            "outages: before {before:?} (threads, sessions), after each cycle {cycles:?}; at most {max_threads} threads, {max_sessions} sessions; {refused} logins refused"
        );
        assert!(refused >= 3, "the outages missed the logins");
        // Two pools (statements, users' locks) of POOL each, at most.
        assert!(before.1 <= 2 * POOL, "{before:?}");
        for (_, (t, c)) in &cycles {
            assert!(*c <= 2 * POOL, "{cycles:?}");
            // The daemon's threads are fixed (none per login or per
            // connection): 2 more at most, never one more per outage.
            assert!(*t <= before.0 + 2, "{before:?} {cycles:?}");
        }
        assert!(max_threads <= before.0 + 2, "{max_threads} {before:?}");
    });
    assert_eq!(a.daemon.pid(), Some(pid), "no restart");
}

#[test]
fn a_code_reported_accepted_stays_used_when_the_database_crashes() {
    test_user(ALICE).unwrap();
    let cluster = std::sync::Arc::new(Cluster::start().unwrap());
    let fleet = Fleet::on(cluster.clone()).unwrap();
    let a = host(&fleet.config());
    let pam = PamService::new("").unwrap();
    let e = enroll(&a.bus, ALICE).unwrap();
    // Backup codes one after another, each tried until it is accepted (or
    // found used: accepted, with the answer lost in the crash), while the
    // server is killed (immediate shutdown: no checkpoint, as in a crash)
    // and started again.
    let (accepted, refused) = std::thread::scope(|s| {
        let stream = s.spawn(|| {
            let (mut accepted, mut refused) = (Vec::new(), 0);
            for code in &e.backup_codes {
                let until = Instant::now() + Duration::from_secs(20);
                while Instant::now() < until {
                    let r = pam.login(&a.bus, ALICE, &line(code)).unwrap();
                    if r.code == pam::SUCCESS {
                        accepted.push(code.clone());
                        break;
                    }
                    if r.stderr.contains("already used") {
                        break;
                    }
                    refused += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (accepted, refused)
        });
        std::thread::sleep(Duration::from_millis(400));
        cluster.stop("immediate").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        cluster.resume().unwrap();
        stream.join().unwrap()
    });
    eprintln!(
        "{} backup codes accepted around the crash, {refused} logins refused during it",
        accepted.len()
    );
    assert!(refused > 0, "the crash missed the stream");
    assert!(accepted.len() >= 8, "{accepted:?}\n{}", a.daemon.log());
    // After recovery each code reported accepted is still used.
    for code in &accepted {
        let again = pam.login(&a.bus, ALICE, &line(code)).unwrap();
        assert_eq!(again.code, pam::AUTH_ERR, "{again:?}");
        assert!(again.stderr.contains("already used"), "{again:?}");
    }
}

#[test]
fn a_host_with_the_wrong_key_or_settings_refuses_to_start_and_says_what_to_fix() {
    let fleet = Fleet::new().unwrap();
    let _a = host(&fleet.config());
    let dir = tempfile::tempdir().unwrap();
    let start = |config: String| {
        let path = dir.path().join("twofold.toml");
        std::fs::write(
            &path,
            format!(
                "state_dir = \"{}\"\n{config}",
                dir.path().join("s").display()
            ),
        )
        .unwrap();
        let out = std::process::Command::new(artifacts().twofoldd())
            .arg("--config")
            .arg(&path)
            .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent")
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let other = dir.path().join("other.key");
    fleet.new_key(&other).unwrap();
    let e = start(fleet.config_with_key(&other));
    assert!(e.contains("fleet key is not the fleet's"), "{e}");
    let e = start(fleet.config_with_key(&dir.path().join("none.key")));
    assert!(e.contains("--new-fleet-key"), "{e}");
    let e = start(
        fleet
            .config()
            .replace(&format!("dbname={}", fleet.db), "dbname=tf_nosuch"),
    );
    assert!(
        e.contains("tf_nosuch") && e.contains("does not exist"),
        "{e}"
    );
    let bad_password = dir.path().join("bad-password");
    std::fs::write(&bad_password, "wrong\n").unwrap();
    let e = start(fleet.config().replace(
        &fleet.cluster.password_file().display().to_string(),
        &bad_password.display().to_string(),
    ));
    assert!(e.contains("password authentication failed"), "{e}");
    fleet
        .psql("UPDATE twofold_schema SET version = 99")
        .unwrap();
    let e = start(fleet.config());
    assert!(e.contains("version 99, newer"), "{e}");
}

#[test]
fn the_database_is_reached_over_tls_with_its_certificate_and_name_verified() {
    let cluster = std::sync::Arc::new(Cluster::start_tls().unwrap());
    let fleet = Fleet::on(cluster.clone()).unwrap();
    let ca = cluster.ca_file();
    let store = PgStore::new(&fleet.tcp_store_config("localhost", &ca).unwrap()).unwrap();
    assert_eq!(store.init().unwrap(), None);
    store
        .write_enrollment("alice", None, &enrollment(3))
        .unwrap();
    // Over the network the server sees TLS (pg_hba.conf has hostssl lines only).
    let ssl = fleet
        .psql("SELECT count(*) FROM pg_stat_ssl WHERE ssl")
        .unwrap();
    assert!(ssl.trim().parse::<u32>().unwrap() >= 1, "{ssl}");

    // The certificate of an unknown CA, and a name the certificate does not carry.
    for (host, ca_file) in [("localhost", Path::new("")), ("127.0.0.1", ca.as_path())] {
        let s = PgStore::new(&fleet.tcp_store_config(host, ca_file).unwrap()).unwrap();
        let e = s.check().unwrap_err().to_string();
        eprintln!("{host}: {e}");
        assert!(e.contains("certificate"), "{host}: {e}");
    }
}

#[test]
fn a_host_moves_into_the_fleet_and_out_with_its_users() {
    test_user(ALICE).unwrap();
    let fleet = Fleet::new().unwrap();
    // A host on its own files: alice enrolls and logs in.
    let mut alone = host("");
    let pam = PamService::new("").unwrap();
    let e = enroll(&alone.bus, ALICE).unwrap();
    let used = oathtool(&e.secret, 0).unwrap();
    assert_eq!(
        pam.login(&alone.bus, ALICE, &line(&used)).unwrap().code,
        pam::SUCCESS
    );
    alone.daemon.kill();

    let config = alone.daemon.config_path.with_file_name("fleet.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n{}",
            alone.daemon.state_dir().display(),
            fleet.config()
        ),
    )
    .unwrap();
    let copy = |direction: &str| {
        let out = std::process::Command::new(artifacts().twofoldd())
            .arg("--config")
            .arg(&config)
            .args(["--copy-store", direction])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let init = std::process::Command::new(artifacts().twofoldd())
        .arg("--config")
        .arg(&config)
        .arg("--init")
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let out = copy("to-database");
    assert!(out.contains("1 enrollments copied"), "{out}");
    let out = copy("to-database");
    assert!(
        out.contains("0 enrollments copied, 0 merged, 1 already there"),
        "{out}"
    );

    // Another host of the fleet: the used code stays used, the next works.
    let b = host(&fleet.config());
    let r = pam.login(&b.bus, ALICE, &line(&used)).unwrap();
    assert_eq!(r.code, pam::AUTH_ERR, "{r:?}");
    let next = oathtool(&e.secret, 1).unwrap();
    assert_eq!(
        pam.login(&b.bus, ALICE, &line(&next)).unwrap().code,
        pam::SUCCESS
    );

    // Out again, into the host's files: the fleet's use came with it.
    let out = copy("to-files");
    assert!(out.contains("0 enrollments copied, 1 merged"), "{out}");
    alone.daemon.restart().unwrap();
    let r = pam.login(&alone.bus, ALICE, &line(&next)).unwrap();
    assert_eq!(r.code, pam::AUTH_ERR, "{r:?}");
    assert!(r.stderr.contains("already used"), "{r:?}");
}

/// An enrollment with a named first app, two more apps (each its own key
/// and last step), clock offsets and a burned step.
fn with_apps(key: u8) -> Enrollment {
    let mut e = enrollment(key);
    e.apps.first = twofoldd::store::AppUse {
        name: Some("phone".into()),
        added: Some(1000),
        last_used: Some(1500),
        drift: Some(-1),
    };
    for (i, name) in ["laptop", "tablet"].into_iter().enumerate() {
        e.apps.more.push(twofoldd::store::App {
            name: name.into(),
            secret: SecretBytes(vec![key ^ (0x10 << i); 20]),
            digits: 6,
            period: 30,
            added: 1100 + i as u64,
            last_step: Some(20 + i as u64),
            used: twofoldd::store::AppUse {
                last_used: Some(1600),
                drift: Some(i as i64),
                ..Default::default()
            },
        });
    }
    e.apps
        .burned
        .push(twofoldd::store::Burned { app: 1, step: 90 });
    e
}

/// Everything `Enrollment` holds comes back from the database as it was
/// written, and each app's use is its own conditional write: a step
/// accepted on one host is refused on another for that app only, a burned
/// step on one host is burned for every host, and two hosts burning at once
/// both keep theirs.
#[test]
fn the_database_keeps_several_authenticators_their_drift_and_burned_steps() {
    let fleet = Fleet::new().unwrap();
    let (a, b) = two_stores(&fleet);
    let e = with_apps(1);
    a.write_enrollment("alice", None, &e).unwrap();
    let mut lb = b.load("alice").unwrap().unwrap();
    assert_eq!(lb.enrollment, e);

    // App 2 (tablet) at step 200, one step ahead, on host A.
    let mut la = a.load("alice").unwrap().unwrap();
    let tablet = Event::TotpAccepted {
        step: 200,
        at: 7000,
        app: 2,
        drift: Some(1),
    };
    a.append("alice", &mut la, tablet).unwrap();
    let mut want = e.clone();
    want.apply(tablet).unwrap();
    let now = b.load("alice").unwrap().unwrap().enrollment;
    assert_eq!(now, want);
    assert_eq!(now.apps.more[1].used.drift, Some(1));
    // The same step of the same app on host B: lost, whatever B loaded.
    assert!(conflict(b.append("alice", &mut lb, tablet)));
    // The same step of app 1 is that app's own: accepted.
    let laptop = Event::TotpAccepted {
        step: 200,
        at: 7000,
        app: 1,
        drift: Some(1),
    };
    b.append("alice", &mut lb, laptop).unwrap();
    want.apply(laptop).unwrap();
    // A first app's step, with no offset given: the stored one stays.
    let first = Event::TotpAccepted {
        step: 201,
        at: 7001,
        app: 0,
        drift: None,
    };
    a.append("alice", &mut la, first).unwrap();
    want.apply(first).unwrap();
    assert_eq!(b.load("alice").unwrap().unwrap().enrollment, want);
    assert_eq!(want.apps.first.drift, Some(-1));
    // An app that does not exist is an error, not a lost race.
    let none = Event::TotpAccepted {
        step: 500,
        at: 7000,
        app: 3,
        drift: None,
    };
    let err = a.append("alice", &mut la, none).unwrap_err();
    assert!(!conflict::<()>(Err(err)));

    // Burned on A, seen burned on B; two hosts burning at once keep both;
    // past 16 the oldest go, as in the file store.
    let mut la = a.load("alice").unwrap().unwrap();
    let mut lb = b.load("alice").unwrap().unwrap();
    let burn = |app, step| Event::StepBurned {
        app,
        step,
        at: 7002,
    };
    a.append("alice", &mut la, burn(0, 300)).unwrap();
    b.append("alice", &mut lb, burn(2, 301)).unwrap();
    want.apply(burn(0, 300)).unwrap();
    want.apply(burn(2, 301)).unwrap();
    let now = b.load("alice").unwrap().unwrap().enrollment;
    assert!(now.is_burned(0, 300) && now.is_burned(2, 301) && now.is_burned(1, 90));
    assert!(!now.is_burned(1, 300));
    assert_eq!(now, want);
    a.append("alice", &mut la, burn(0, 300)).unwrap();
    for step in 400..420 {
        a.append("alice", &mut la, burn(1, step)).unwrap();
        want.apply(burn(1, step)).unwrap();
    }
    let now = b.load("alice").unwrap().unwrap();
    assert_eq!(
        now.enrollment.apps.burned.len(),
        twofoldd::store::MAX_BURNED
    );
    assert_eq!(now.enrollment, want);

    // Removing an app rewrites the row under a new generation: the other
    // apps keep their keys and use, and its burned steps go with it.
    let mut next = now.enrollment.clone();
    next.remove_app(1).unwrap();
    next.generation += 1;
    b.write_enrollment("alice", Some(&now), &next).unwrap();
    let after = a.load("alice").unwrap().unwrap();
    assert_eq!(after.enrollment, next);
    assert_eq!(after.enrollment.apps.more.len(), 1);
    assert_eq!(after.enrollment.apps.more[0].name, "tablet");
    // A write still conditional on the older generation loses.
    assert!(conflict(a.append("alice", &mut la, first)));

    // A backup code used on host A is spent, not unknown, for host B.
    let (codes, backup) = backup::generate(5, FAST).unwrap();
    let mut fresh = after.enrollment.clone();
    fresh.generation += 1;
    fresh.backup = backup;
    b.write_enrollment("alice", Some(&after), &fresh).unwrap();
    let mut la = a.load("alice").unwrap().unwrap();
    let twofoldd::backup::Found::Unused(index) = la
        .enrollment
        .backup
        .find_or_spent(codes[2].expose())
        .unwrap()
    else {
        panic!("a new code reads as unused")
    };
    a.append(
        "alice",
        &mut la,
        Event::BackupUsed {
            index: index as u64,
            at: 6,
        },
    )
    .unwrap();
    let lb = b.load("alice").unwrap().unwrap();
    assert_eq!(
        lb.enrollment
            .backup
            .find_or_spent(codes[2].expose())
            .unwrap(),
        twofoldd::backup::Found::Spent
    );
    let (never, _) = backup::generate(1, FAST).unwrap();
    assert_eq!(
        lb.enrollment
            .backup
            .find_or_spent(never[0].expose())
            .unwrap(),
        twofoldd::backup::Found::Wrong
    );
    // And after a rewrite (which clears the used bits), still spent.
    let mut again = lb.enrollment.clone();
    again.generation += 1;
    b.write_enrollment("alice", Some(&lb), &again).unwrap();
    let la = a.load("alice").unwrap().unwrap();
    assert_eq!(
        la.enrollment
            .backup
            .find_or_spent(codes[2].expose())
            .unwrap(),
        twofoldd::backup::Found::Spent
    );
}

/// Through real libpam on two hosts: a second app added on host B logs in
/// on host A (once in the fleet), a clock offset seen on B shows on A, and
/// a step burned by a clock diagnosis on A is refused on B, whose wider
/// window would otherwise accept it (the policy is each host's own).
#[test]
fn a_second_app_a_clock_offset_and_a_burned_step_are_the_fleets() {
    test_user(ALICE).unwrap();
    let fleet = Fleet::new().unwrap();
    let a = host(&format!("{}[totp]\nwindow = 0\n", fleet.config()));
    let b = host(&format!("{}[totp]\nwindow = 2\n", fleet.config()));
    let pam = PamService::new("").unwrap();
    wait_for_step_margin(20);
    let e = enroll_confirming(&b.bus, ALICE, -1).unwrap();
    // The first app confirmed step -1; its step 0 proves alice for the new one.
    let laptop = add_app(
        &b.bus,
        ALICE,
        "laptop",
        &oathtool(&e.secret, 0).unwrap(),
        -1,
    );

    let code = oathtool(&laptop, 0).unwrap();
    let r = pam.login(&a.bus, ALICE, &line(&code)).unwrap();
    assert_eq!(r.code, pam::SUCCESS, "{r:?}\n{}", a.daemon.log());
    let accepted = a.daemon.log();
    let accepted = accepted
        .lines()
        .rfind(|l| l.contains("outcome=accepted-totp"))
        .unwrap();
    assert!(accepted.contains("app=laptop"), "{accepted}");
    let r = pam.login(&b.bus, ALICE, &line(&code)).unwrap();
    assert_eq!(r.code, pam::AUTH_ERR, "{r:?}");
    assert!(r.stderr.contains("already used"), "{r:?}");

    // The first app's clock a step ahead, accepted on B; A's status shows it.
    let ahead = oathtool(&e.secret, 1).unwrap();
    let r = pam.login(&b.bus, ALICE, &line(&ahead)).unwrap();
    assert_eq!(r.code, pam::SUCCESS, "{r:?}");
    let status = a
        .bus
        .command_as(ALICE, artifacts().twofold())
        .arg("status")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("laptop (totp, added "), "{text}");
    assert!(text.contains("clock about 30 seconds ahead"), "{text}");

    // Two steps ahead: outside A's window, so A names the clock and burns
    // the step; B's window holds it, but B refuses it as used.
    wait_for_step_margin(15);
    let burned = oathtool(&e.secret, 2).unwrap();
    let r = pam.login(&a.bus, ALICE, &line(&burned)).unwrap();
    assert_eq!(r.code, pam::AUTH_ERR, "{r:?}");
    assert!(r.stderr.contains("ahead"), "{r:?}");
    let r = pam.login(&b.bus, ALICE, &line(&burned)).unwrap();
    assert_eq!(r.code, pam::AUTH_ERR, "{r:?}\n{}", b.daemon.log());
    assert!(r.stderr.contains("already used"), "{r:?}");
    // What B's window does with a step two ahead that was not burned.
    let r = pam
        .login(&b.bus, ALICE, &line(&oathtool(&laptop, 2).unwrap()))
        .unwrap();
    assert_eq!(r.code, pam::SUCCESS, "{r:?}");
}

/// A database made by the first twofold (schema version 1: one app per
/// user) holding a user who logged in: `twofoldd --init` brings it to
/// version 2 in one transaction, nothing is lost (the used step and the
/// used backup code stay used) and a login works right after; a migration
/// that fails changes nothing; a version 3 is refused and left alone.
#[test]
fn init_migrates_a_version_1_database_with_its_users_and_refuses_a_newer_one() {
    use twofoldd::store::postgres::{KEY_CHECK, SCHEMA_V1};
    test_user(ALICE).unwrap();
    let fleet = Fleet::new().unwrap();
    let key = twofoldd::store::seal::FleetKey::load(&fleet.key_file()).unwrap();
    let sealed = |user: &str, field: &str, plain: &[u8]| {
        format!("'\\x{}'", hex::encode(key.seal(user, field, plain)))
    };
    let secret = [0x42u8; 20];
    let base32 = totp_rs::Secret::from(&secret[..]).to_base32();
    let (codes, backup) = backup::generate(5, FAST).unwrap();
    wait_for_step_margin(15);
    let used_step = unix_now() / 30 - 1;
    let v1 = format!(
        "{SCHEMA_V1}
        INSERT INTO twofold_schema VALUES (1, 1, {});
        INSERT INTO twofold_enrollment (user_name, revision, generation, version, secret, email,
            digits, period, enrolled_at, last_step, backup, backup_used, failures, last_failure,
            ceiling_tat, last_login, last_host)
        VALUES ('{ALICE}', 4, 11, 1, {}, {}, 6, 30, 1000, {used_step}, '{}', 1, 2, 900, 0, 950,
            'old-host');
        INSERT INTO twofold_meta VALUES ('{ALICE}', '{{\"override_mode\":\"require\"}}');",
        sealed("", "key-check", KEY_CHECK),
        sealed(ALICE, "secret", &secret),
        sealed(ALICE, "email", b"alice@example.org"),
        serde_json::to_string(&backup).unwrap(),
    );
    fleet.psql(&v1).unwrap();
    let version = || fleet.psql("SELECT version FROM twofold_schema").unwrap();

    // Not migrated yet: a host refuses, and says what to run.
    let store = PgStore::new(&fleet.store_config()).unwrap();
    let e = store.check().unwrap_err();
    assert!(e.to_string().contains("run `twofoldd --init`"), "{e}");

    // A migration that fails half-way (a column in its way) changes nothing.
    fleet
        .psql("ALTER TABLE twofold_enrollment ADD COLUMN burned integer")
        .unwrap();
    let out = fleet.twofoldd(&["--init"]).unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(version().trim(), "1");
    assert!(
        fleet
            .psql("SELECT last_step FROM twofold_enrollment")
            .is_ok()
    );
    assert!(fleet.psql("SELECT apps FROM twofold_enrollment").is_err());
    fleet
        .psql("ALTER TABLE twofold_enrollment DROP COLUMN burned")
        .unwrap();

    let out = fleet.twofoldd(&["--init"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("schema version 1 migrated to 2"), "{text}");
    assert_eq!(version().trim(), "2");
    store.check().unwrap();
    let e = store.load(ALICE).unwrap().unwrap().enrollment;
    assert_eq!(e.last_step, Some(used_step));
    assert_eq!(e.secret, Some(SecretBytes(secret.to_vec())));
    assert_eq!(e.email.as_deref(), Some("alice@example.org"));
    assert_eq!(
        (e.failures, e.last_failure, e.last_login),
        (2, 900, Some(950))
    );
    assert_eq!(e.app_list().len(), 1);
    assert_eq!(
        store.load_meta(ALICE).unwrap().override_mode,
        Some(twofoldd::policy::Mode::Require)
    );
    // Again: nothing to do.
    let out = fleet.twofoldd(&["--init"]).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("version 2 is ready"),
        "{out:?}"
    );

    // A host of the fleet: the used step and backup code stay used, the
    // next ones log in.
    let h = host(&fleet.config());
    let pam = PamService::new("").unwrap();
    for (code, ok) in [
        (oathtool(&base32, -1).unwrap(), false),
        (codes[0].expose().to_string(), false),
        (oathtool(&base32, 0).unwrap(), true),
        (codes[1].expose().to_string(), true),
    ] {
        let r = pam.login(&h.bus, ALICE, &line(&code)).unwrap();
        if ok {
            assert_eq!(r.code, pam::SUCCESS, "{r:?}\n{}", h.daemon.log());
        } else {
            assert_eq!(r.code, pam::AUTH_ERR, "{r:?}");
            assert!(r.stderr.contains("already used"), "{r:?}");
        }
    }

    // A schema from a newer twofold: refused by --init, and left as it is;
    // a running host's check-config names it.
    fleet.psql("UPDATE twofold_schema SET version = 3").unwrap();
    // (No policy file on this host: that is said too, with exit status 1.)
    let out = h.bus.twofold(&["admin", "check-config"]).unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains(
            "Store: NOT READY: database schema: the database's schema is version 3, newer"
        ),
        "{text}"
    );
    let out = fleet.twofoldd(&["--init"]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        err.contains("version 3, newer than this twofoldd knows (2): upgrade twofold"),
        "{err}"
    );
    assert_eq!(version().trim(), "3");
}

/// E-mailed codes in flight are the fleet's (`CodeStore` for `PgStore`): a
/// code put by one host is checked by another, the sends are rationed for
/// the fleet, 16 checks at once over two hosts match once, misses and
/// expiry as in memory, an enrollment's address comes back, and the table
/// holds neither the code nor the address in clear.
#[test]
fn e_mailed_codes_in_flight_are_the_fleets_kept_hashed_and_used_once() {
    use twofoldd::email_codes::{CodeStore, EmailCheck, Purpose, SendLimits};
    let fleet = Fleet::new().unwrap();
    let (a, b) = two_stores(&fleet);
    let (a, b): (&dyn CodeStore, &dyn CodeStore) = (&a, &b);
    let limits = SendLimits {
        interval: 60,
        per_hour: 3,
    };
    let login = Purpose::Login;
    assert_eq!(
        a.put("alice", "123456", &login, 1300, 1000, limits)
            .unwrap(),
        Ok(())
    );
    // Another host may not send again within the interval.
    assert_eq!(
        b.put("alice", "654321", &login, 1310, 1010, limits)
            .unwrap(),
        Err(50)
    );
    // The refused send held the row's lock: it is released with the
    // answer, so another host's check does not wait for it.
    assert_eq!(
        a.check("alice", &login, "000000", 1015).unwrap().0,
        EmailCheck::NoMatch
    );
    assert!(b.has_login_code("alice", 1020).unwrap());
    assert!(!b.has_login_code("bob", 1020).unwrap());
    assert!(!b.has_login_code("alice", 1300).unwrap(), "expired");
    let held = fleet
        .psql("SELECT count(*) FROM twofold_email_code WHERE position('\\x313233343536'::bytea in code) > 0 OR length(code) <> 40")
        .unwrap();
    assert_eq!(
        held.trim(),
        "0",
        "the code is kept as a 40-byte keyed hash only"
    );

    assert_eq!(
        b.check("alice", &login, "000000", 1020).unwrap().0,
        EmailCheck::NoMatch
    );
    let checks: Vec<EmailCheck> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let store = if i % 2 == 0 { a } else { b };
                s.spawn(move || {
                    store
                        .check("alice", &Purpose::Login, "123456", 1030)
                        .unwrap()
                        .0
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let matches = checks.iter().filter(|c| **c == EmailCheck::Match).count();
    assert_eq!(matches, 1, "{checks:?}");
    assert!(
        checks
            .iter()
            .all(|c| matches!(c, EmailCheck::Match | EmailCheck::None))
    );

    // Five misses on any hosts void the code.
    assert_eq!(
        a.put("alice", "222222", &login, 1400, 1100, limits)
            .unwrap(),
        Ok(())
    );
    for i in 0..5 {
        let store = if i % 2 == 0 { a } else { b };
        assert_eq!(
            store.check("alice", &login, "000000", 1101).unwrap().0,
            EmailCheck::NoMatch
        );
    }
    assert_eq!(
        b.check("alice", &login, "222222", 1102).unwrap().0,
        EmailCheck::None
    );
    // The hour's ration (3) is the fleet's.
    assert_eq!(
        b.put("alice", "333333", &login, 1500, 1200, limits)
            .unwrap(),
        Ok(())
    );
    assert_eq!(
        a.put("alice", "444444", &login, 1600, 1300, limits)
            .unwrap(),
        Err(3600 - 300)
    );
    // Expired: gone, even with the right code.
    assert_eq!(
        a.check("alice", &login, "333333", 1500).unwrap().0,
        EmailCheck::None
    );

    // An enrollment's code: its purpose (the address) comes back on the
    // other host, sealed meanwhile; a login code does not confirm it.
    let enroll = Purpose::Enroll {
        uid: 4242,
        address: "carol@example.org".into(),
        adds: true,
    };
    assert_eq!(
        a.put("carol", "555555", &enroll, 2000, 1000, limits)
            .unwrap(),
        Ok(())
    );
    assert_eq!(
        b.check("carol", &login, "555555", 1001).unwrap().0,
        EmailCheck::None
    );
    assert!(!b.has_login_code("carol", 1001).unwrap());
    let dump = fleet.dump().unwrap();
    assert!(dump.contains("twofold_email_code"), "{dump}");
    assert!(!dump.contains("carol@example.org"), "{dump}");
    let probe = Purpose::Enroll {
        uid: 0,
        address: String::new(),
        adds: false,
    };
    assert_eq!(
        b.check("carol", &probe, "555555", 1002).unwrap(),
        (EmailCheck::Match, Some(enroll))
    );

    // A failed send voids its own code only.
    assert_eq!(
        a.put("dave", "666666", &login, 2000, 1000, limits).unwrap(),
        Ok(())
    );
    b.void("dave", "777777").unwrap();
    assert!(a.has_login_code("dave", 1001).unwrap());
    b.void("dave", "666666").unwrap();
    assert!(!a.has_login_code("dave", 1001).unwrap());
}

/// Through real libpam, real SMTP: a login on host A e-mails a code (and is
/// answered wrongly); host B, within its resend interval, sends none (the
/// fleet's sends are counted together) and takes A's code, once; the code
/// is then refused on either host.
#[test]
fn a_code_e_mailed_by_one_host_logs_in_once_on_another() {
    use std::io::Write;
    use twofold_e2e::smtp::SmtpSink;
    const USER: &str = "tf-fleet-mail";
    const RHOST: &str = "192.0.2.7";
    test_user(USER).unwrap();
    let fleet = Fleet::new().unwrap();
    let sink = SmtpSink::start().unwrap();
    let lenient = "[throttle]\nfree_failures = 50\nlockout_after = 100\n";
    let config = |interval: u32| {
        format!(
            "{}resend_interval_secs = {interval}\nmax_sends_per_hour = 20\n{lenient}{}",
            sink.config(),
            fleet.config()
        )
    };
    let bus_a = Bus::start().unwrap();
    let _a =
        Daemon::start_with_policy(&bus_a, &config(0), "[default]\nmode = \"require\"\n").unwrap();
    let bus_b = Bus::start().unwrap();
    let _b =
        Daemon::start_with_policy(&bus_b, &config(300), "[default]\nmode = \"require\"\n").unwrap();
    let pam = PamService::service("sshd").unwrap();

    // E-mail codes set up on A.
    let seen = sink.messages().len();
    let mut child = bus_a
        .command_as(USER, artifacts().twofold())
        .args([
            "setup",
            "--method",
            "email",
            "--address",
            "tf-fleet-mail@test.example",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mail = sink.wait_for(seen).unwrap();
    writeln!(stdin, "{}", mail.code().unwrap()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");

    // A login on A: a code is mailed; a wrong answer.
    let seen = sink.messages().len();
    let mut mailed = None;
    let r = pam
        .login_answering(&bus_a, USER, RHOST, b"", || {
            mailed = sink.wait_for(seen).ok();
            b"000000\n".to_vec()
        })
        .unwrap();
    assert_eq!(r.code, pam::AUTH_ERR, "{r:?}");
    let code = mailed.expect("A mailed a code").code().unwrap();
    used_secret(&code);
    let sent = sink.messages().len();

    // On B: no new mail (A sent one a moment ago), and A's code logs in.
    let r = pam
        .login_from(&bus_b, USER, RHOST, format!("{code}\n").as_bytes())
        .unwrap();
    assert_eq!(r.code, pam::SUCCESS, "{r:?}");
    assert!(r.stderr.contains("Code from an earlier e-mail"), "{r:?}");
    // Once: refused on B again, and on A (which mails a new one first).
    let r = pam
        .login_from(&bus_b, USER, RHOST, format!("{code}\n").as_bytes())
        .unwrap();
    assert_eq!(r.code, pam::AUTH_ERR, "{r:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.messages().len(), sent, "B mailed nothing");
    let r = pam
        .login_answering(&bus_a, USER, RHOST, b"", || {
            format!("{code}\n").into_bytes()
        })
        .unwrap();
    assert_eq!(r.code, pam::AUTH_ERR, "{r:?}");
}

/// `twofold admin report` on any host of the fleet says on which host each
/// user last logged in; on one host's own files, that host. `AdminReport`,
/// which older `twofold` commands call, still answers in its old shape.
#[test]
fn the_report_names_the_host_of_each_users_last_login() {
    test_user(ALICE).unwrap();
    let fleet = Fleet::new().unwrap();
    let hosts: Vec<Host> = ["fleet-a", "fleet-b"]
        .into_iter()
        .map(|name| {
            let bus = Bus::start().unwrap();
            let daemon = Daemon::start_as_host(&bus, &fleet.config(), name).unwrap();
            Host { bus, daemon }
        })
        .collect();
    let (a, b) = (&hosts[0], &hosts[1]);
    let pam = PamService::new("").unwrap();
    let report = |h: &Host, json: bool| {
        let args: &[&str] = if json {
            &["admin", "report", "--json"]
        } else {
            &["admin", "report"]
        };
        let out = h.bus.twofold(args).unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find(|l| l.contains(ALICE))
            .unwrap_or_else(|| panic!("{text}"))
            .to_string()
    };
    let e = enroll(&a.bus, ALICE).unwrap();
    let row = report(b, true);
    assert!(row.contains("\"last_host\":\"\""), "never logged in: {row}");

    let code = oathtool(&e.secret, 0).unwrap();
    assert_eq!(
        pam.login(&b.bus, ALICE, &line(&code)).unwrap().code,
        pam::SUCCESS
    );
    for h in [a, b] {
        let row = report(h, true);
        assert!(row.contains("\"last_host\":\"fleet-b\""), "{row}");
        let row = report(h, false);
        assert!(row.contains("  fleet-b  "), "{row}");
    }
    let backup = &e.backup_codes[0];
    assert_eq!(
        pam.login(&a.bus, ALICE, &line(backup)).unwrap().code,
        pam::SUCCESS
    );
    assert!(report(b, true).contains("\"last_host\":\"fleet-a\""));

    // The old call: the same rows, in the old shape (no host in it).
    let out = a
        .bus
        .command("dbus-send")
        .args([
            "--system",
            "--print-reply",
            "--dest=org.twofold.Twofold1",
            "/org/twofold/Twofold1",
            "org.twofold.Twofold1.AdminReport",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains(ALICE) && !text.contains("fleet-a"), "{text}");

    // One host on its own files: its own name.
    let alone = host("");
    let e = enroll(&alone.bus, ALICE).unwrap();
    let code = oathtool(&e.secret, 0).unwrap();
    assert_eq!(
        pam.login(&alone.bus, ALICE, &line(&code)).unwrap().code,
        pam::SUCCESS
    );
    let name = String::from_utf8(std::fs::read("/proc/sys/kernel/hostname").unwrap()).unwrap();
    let row = report(&alone, true);
    assert!(
        row.contains(&format!("\"last_host\":\"{}\"", name.trim())),
        "{row}"
    );
    // Its check-config: the policy, and the store it has.
    let out = alone.bus.twofold(&["admin", "check-config"]).unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("policy.toml"), "no policy file here: {text}");
    assert!(
        text.contains("\nStore: this host's state directory."),
        "{text}"
    );
}

/// `rule/mode` from `twofold admin status --json` on `bus`.
fn mode_on(bus: &Bus, user: &str) -> String {
    let out = bus.twofold(&["admin", "status", user, "--json"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let value = |key: &str| {
        let from = text
            .find(&format!("\"{key}\":\""))
            .unwrap_or_else(|| panic!("{key}: {text}"));
        let rest = &text[from + key.len() + 4..];
        rest[..rest.find('"').unwrap()].to_string()
    };
    format!("{}/{}", value("rule"), value("mode"))
}

/// A per-user override set on one host is the fleet's: the other host's
/// status and logins follow it at once, and clearing it on the other host
/// clears it for the first.
#[test]
fn require_and_exempt_on_one_host_hold_on_every_host() {
    test_user(ALICE).unwrap();
    let fleet = Fleet::new().unwrap();
    let (a, b) = (host(&fleet.config()), host(&fleet.config()));
    let pam = PamService::new("").unwrap();
    let before = mode_on(&b.bus, ALICE);
    assert!(!before.starts_with("override/"), "{before}");

    let out = a.bus.twofold(&["admin", "require", ALICE]).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode_on(&b.bus, ALICE), "override/require");
    // Required and not enrolled: host B lets no one in without a code.
    let refused = pam.login(&b.bus, ALICE, b"").unwrap();
    assert_ne!(refused.code, pam::SUCCESS, "{refused:?}");

    let out = b.bus.twofold(&["admin", "exempt", ALICE]).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode_on(&a.bus, ALICE), "override/exempt");
    let exempt = pam.login(&a.bus, ALICE, b"").unwrap();
    assert_eq!(exempt.code, pam::SUCCESS, "{exempt:?}");
}

/// What one lane of the failover test saw of one code.
struct Typed {
    code: String,
    /// Reported accepted (PAM_SUCCESS), and whether before the kill.
    accepted: Option<bool>,
    /// Logins refused because the store could not be reached.
    refused: u32,
}

/// A primary and a synchronous streaming standby, both started here; two
/// hosts name both in their connection string. A frozen standby holds a
/// commit back (the login is refused at the deadline). Three users' TOTP and
/// backup codes, each typed at once through both hosts, stream through real
/// libpam while the primary is killed (SIGKILL, every process) and the
/// standby promoted: the daemons find it by themselves, no code is
/// accepted twice, and every code reported accepted (before the kill
/// above all) is still used on the new primary.
#[test]
fn a_failover_to_a_synchronous_standby_loses_no_accepted_code() {
    const USERS: [&str; 3] = ["tf-fo0", "tf-fo1", "tf-fo2"];
    const BACKUP: u32 = 12;
    const SIX: twofoldd::totp::TotpParams = twofoldd::totp::TotpParams {
        digits: 6,
        period: 30,
        window: 1,
    };
    for u in USERS {
        test_user(u).unwrap();
    }
    let started = Instant::now();
    let primary = std::sync::Arc::new(Cluster::start_primary().unwrap());
    let standby = primary.start_standby().unwrap();
    let fleet = Fleet::on(primary.clone()).unwrap();
    let config = fleet.config_with_standby(&standby);
    let hosts = [host(&config), host(&config)];
    let pam = PamService::new("").unwrap();

    // Each user: this step's code, 12 backup codes, the next step's code.
    let store = PgStore::new(&fleet.store_config()).unwrap();
    let now = unix_now();
    let mut codes: Vec<Vec<String>> = Vec::new();
    let mut probe = String::new();
    for (n, user) in USERS.iter().enumerate() {
        let mut e = enrollment(n as u8 + 1);
        let secret: Vec<u8> = rand::random::<[u8; 20]>().to_vec();
        e.secret = Some(SecretBytes(secret.clone()));
        e.last_step = None;
        let (plain, set) = backup::generate(BACKUP + 1, FAST).unwrap();
        e.backup = set;
        store.write_enrollment(user, None, &e).unwrap();
        let mut mine = vec![twofoldd::totp::code_at(&secret, SIX, now).unwrap()];
        mine.extend(plain[1..].iter().map(|c| c.expose().to_string()));
        if n == 0 {
            probe = plain[0].expose().to_string();
        }
        mine.push(twofoldd::totp::code_at(&secret, SIX, now + 30).unwrap());
        codes.push(mine);
    }
    drop(store);
    let total: usize = codes.iter().map(Vec::len).sum();

    // The replication is synchronous: with the standby frozen (SIGSTOP) a
    // commit waits for it, so the login is refused at the deadline rather
    // than accepted with the step on the primary alone.
    standby.freeze(true).unwrap();
    let t = Instant::now();
    let r = pam.login(&hosts[0].bus, USERS[0], &line(&probe));
    standby.freeze(false).unwrap();
    let (r, waited) = (r.unwrap(), t.elapsed());
    assert_eq!(r.code, pam::AUTH_ERR, "{r:?}");
    assert!(r.stderr.contains("cannot read or write its state"), "{r:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");

    let accepted = std::sync::atomic::AtomicUsize::new(0);
    let killed = std::sync::atomic::AtomicBool::new(false);
    // Each user's codes in order through host A and host B at once.
    let (lanes, killed_at, promoted_after) = std::thread::scope(|s| {
        let lanes: Vec<_> = (0..USERS.len() * 2)
            .map(|lane| {
                let (user, bus) = (USERS[lane / 2], &hosts[lane % 2].bus);
                let (mine, pam, accepted, killed) = (&codes[lane / 2], &pam, &accepted, &killed);
                s.spawn(move || {
                    let mut seen = Vec::new();
                    for code in mine {
                        let mut t = Typed {
                            code: code.clone(),
                            accepted: None,
                            refused: 0,
                        };
                        let until = Instant::now() + Duration::from_secs(30);
                        while Instant::now() < until {
                            let before = !killed.load(std::sync::atomic::Ordering::SeqCst);
                            let r = pam.login(bus, user, &line(code)).unwrap();
                            if r.code == pam::SUCCESS {
                                t.accepted = Some(before);
                                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                break;
                            }
                            if r.stderr.contains("already used") {
                                break;
                            }
                            assert!(
                                r.stderr.contains("cannot read or write its state"),
                                "{user} {code}: {r:?}"
                            );
                            t.refused += 1;
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        seen.push(t);
                    }
                    seen
                })
            })
            .collect();
        // A third of the codes in: the primary dies, the standby takes over.
        while accepted.load(std::sync::atomic::Ordering::SeqCst) < total / 3 {
            std::thread::sleep(Duration::from_millis(5));
        }
        killed.store(true, std::sync::atomic::Ordering::SeqCst);
        primary.kill().unwrap();
        let killed_at = Instant::now();
        std::thread::sleep(Duration::from_millis(300));
        standby.promote().unwrap();
        let promoted_after = killed_at.elapsed();
        let lanes: Vec<Vec<Typed>> = lanes.into_iter().map(|l| l.join().unwrap()).collect();
        (lanes, killed_at, promoted_after)
    });
    let resumed_after = killed_at.elapsed();

    // Per code: how often accepted over both hosts.
    let mut twice = 0;
    let (mut before, mut after, mut lost_answers, mut refused) = (Vec::new(), 0, 0, 0);
    for (n, mine) in codes.iter().enumerate() {
        for (k, code) in mine.iter().enumerate() {
            let views = [&lanes[2 * n][k], &lanes[2 * n + 1][k]];
            assert!(views.iter().all(|t| &t.code == code));
            refused += views.iter().map(|t| t.refused).sum::<u32>();
            let wins: Vec<bool> = views.iter().filter_map(|t| t.accepted).collect();
            match wins.as_slice() {
                [] => lost_answers += 1,
                [true] => before.push((USERS[n], code)),
                [false] => after += 1,
                _ => twice += 1,
            }
        }
    }
    eprintln!(
        "failover: {total} codes, {} accepted before the kill, {after} after, {lost_answers} with the answer lost; \
         {refused} logins refused meanwhile; promoted {promoted_after:?} after the kill, every code done {resumed_after:?} after it; \
         test {:?} in all",
        before.len(),
        started.elapsed()
    );
    assert_eq!(twice, 0, "codes accepted twice");
    assert!(refused > 0, "the kill missed the load");
    assert!(before.len() >= total / 3, "{}", before.len());
    assert!(after > 0, "no login accepted after the promotion");
    // Answers lost in the crash: at most the logins in flight at the kill.
    assert!(lost_answers <= lanes.len(), "{lost_answers}");
    // On the new primary each code reported accepted before the kill is
    // still used: a replay of it is refused, through either host.
    for (i, (user, code)) in before.iter().enumerate() {
        let r = pam.login(&hosts[i % 2].bus, user, &line(code)).unwrap();
        assert_eq!(r.code, pam::AUTH_ERR, "{user} {code}: {r:?}");
        assert!(r.stderr.contains("already used"), "{user} {code}: {r:?}");
    }
    // The login refused while the standby was frozen had committed on the
    // primary, and the standby has it too: its code is used, not lost.
    let r = pam.login(&hosts[1].bus, USERS[0], &line(&probe)).unwrap();
    assert!(r.stderr.contains("already used"), "{r:?}");
    let promoted = standby
        .psql(&fleet.db, "SELECT pg_is_in_recovery()")
        .unwrap();
    assert_eq!(promoted.trim(), "f");
}

/// The e-mail code table keeps no row that holds nothing: each send prunes
/// up to 16 rows whose code expired and whose last send is over an hour
/// old (the hourly ration still counts younger ones).
#[test]
fn e_mail_code_rows_that_hold_nothing_are_pruned_as_codes_are_sent() {
    use twofoldd::email_codes::{CodeStore, Purpose, SendLimits};
    let fleet = Fleet::new().unwrap();
    let (a, _b) = two_stores(&fleet);
    let a: &dyn CodeStore = &a;
    let limits = SendLimits {
        interval: 60,
        per_hour: 3,
    };
    let put = |user: &str, expires_at: u64, now: u64| {
        assert_eq!(
            a.put(user, "123456", &Purpose::Login, expires_at, now, limits)
                .unwrap(),
            Ok(())
        );
    };
    let rows = || {
        fleet
            .psql("SELECT count(*) FROM twofold_email_code")
            .unwrap()
            .trim()
            .to_string()
    };
    for i in 0..20 {
        put(&format!("user{i}"), 1300, 1000);
    }
    assert_eq!(rows(), "20");
    // Expired, but sent within the hour: kept for the ration.
    put("late", 2300, 2000);
    assert_eq!(rows(), "21");
    // Over an hour after those sends: 16 go with this send, the rest with
    // the next; the younger row and the live codes stay.
    put("later", 5000, 4700);
    assert_eq!(rows(), "6");
    put("last", 5010, 4710);
    assert_eq!(rows(), "3");
    assert!(a.has_login_code("later", 4710).unwrap());
    assert!(a.has_login_code("last", 4710).unwrap());
}
