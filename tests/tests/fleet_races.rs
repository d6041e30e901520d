//! Races between the hosts of a fleet that the shared store itself settles,
//! on a real PostgreSQL server started by the test (tests/src/postgres.rs):
//! a check's read of the state, sent with the user's lock in one round trip,
//! still sees what the lock's previous holder wrote; a user's metadata is
//! written only on the revision it was read at, so no host undoes another's
//! change (an administrator's `require` or `forget-devices`); and a login
//! the database fails is logged as that login, naming user and service.
//! Two `PgStore`s on one database stand for two hosts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::{Barrier, mpsc};
use std::time::{Duration, Instant};
use twofold_e2e::postgres::Fleet;
use twofold_e2e::*;
use twofoldd::backup::{self, HashParams};
use twofoldd::policy::Mode;
use twofoldd::store::{
    Enrollment, Event, PgStore, Remembered, SecretBytes, Store, StoreError, UserMeta, update_meta,
};

const ALICE: &str = "tf-alice";

const FAST: HashParams = HashParams {
    m_cost_kib: 64,
    t_cost: 1,
    p_cost: 1,
};

fn enrollment() -> Enrollment {
    let (_, backup) = backup::generate(5, FAST).unwrap();
    Enrollment {
        last_step: Some(10),
        ..Enrollment::new(11, Some(SecretBytes(vec![7; 20])), (6, 30), backup, 1000)
    }
}

fn two_stores(fleet: &Fleet) -> (PgStore, PgStore) {
    let cfg = fleet.store_config();
    let a = PgStore::new(&cfg).unwrap();
    a.init().unwrap();
    let b = PgStore::new(&cfg).unwrap();
    b.check().unwrap();
    (a, b)
}

fn device(rhost: &str) -> Remembered {
    Remembered {
        rhost: rhost.into(),
        until: 4_000_000_000,
    }
}

/// Host B's `lock_and_load` (the lock and the read sent at once) waits
/// while host A holds the user's lock, and reads what A wrote before it let
/// go: the read's snapshot is taken with the lock held (a read taken with
/// the lock request, in one statement, would see the state before A's write).
#[test]
fn a_check_reads_the_state_only_once_the_users_lock_is_held() {
    let fleet = Fleet::new().unwrap();
    let (a, b) = two_stores(&fleet);
    a.write_enrollment("bob", None, &enrollment()).unwrap();
    for round in 0..3u64 {
        let held = a.lock_user("bob").unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let (lock, loaded) = b.lock_and_load("bob").unwrap();
                let mut loaded = loaded.unwrap();
                tx.send(loaded.clone()).unwrap();
                // Under B's lock, B's own state is current: its write
                // conditional on it goes through.
                b.append("bob", &mut loaded, Event::Unlock { at: 3000 })
                    .unwrap();
                drop(lock);
            });
            assert!(
                rx.recv_timeout(Duration::from_millis(400)).is_err(),
                "B waits for A's lock"
            );
            let mut loaded = a.load("bob").unwrap().unwrap();
            let step = 50 + round;
            a.append(
                "bob",
                &mut loaded,
                Event::TotpAccepted {
                    step,
                    at: 2000,
                    app: 0,
                    drift: None,
                },
            )
            .unwrap();
            drop(held);
            let seen = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(seen.enrollment.last_step, Some(step), "round {round}");
            assert_eq!(seen.revision, loaded.revision, "round {round}");
        });
    }
    // A user with no enrollment: locked all the same, and let go.
    let (lock, none) = b.lock_and_load("carol").unwrap();
    assert!(none.is_none());
    drop(lock);
    let (_lock, none) = a.lock_and_load("carol").unwrap();
    assert!(none.is_none());
}

/// Host B read a user's metadata (to remember a device, say); host A's
/// administrator then requires two-factor for the user and forgets their
/// devices. B's write on what it read is refused (`Conflict`), and A's
/// change stays; `update_meta` makes B's change again on A's. Then 12
/// writers on two hosts, all at once, each adding devices: every change
/// reported made is there, none lost.
#[test]
fn a_users_metadata_is_written_on_the_revision_read_so_no_host_undoes_another() {
    let fleet = Fleet::new().unwrap();
    let (a, b) = two_stores(&fleet);
    update_meta(&a, ALICE, &mut |m| {
        m.remembered.push(device("laptop"));
        true
    })
    .unwrap();
    let (mut stale, read) = b.load_meta_revision(ALICE).unwrap();
    assert_ne!(read, 0, "a stored row has a revision");
    update_meta(&a, ALICE, &mut |m| {
        m.override_mode = Some(Mode::Require);
        m.remembered.clear();
        true
    })
    .unwrap();
    stale.remembered.push(device("desk"));
    let r = b.write_meta(ALICE, &stale, read);
    assert!(matches!(r, Err(StoreError::Conflict { .. })), "{r:?}");
    assert_eq!(
        a.load_meta(ALICE).unwrap(),
        UserMeta {
            override_mode: Some(Mode::Require),
            ..UserMeta::default()
        }
    );
    update_meta(&b, ALICE, &mut |m| {
        m.remembered.push(device("desk"));
        true
    })
    .unwrap();
    let now = a.load_meta(ALICE).unwrap();
    assert_eq!(now.override_mode, Some(Mode::Require));
    assert_eq!(now.remembered, vec![device("desk")]);
    // A change that changes nothing writes nothing.
    let (_, before) = a.load_meta_revision(ALICE).unwrap();
    update_meta(&b, ALICE, &mut |_| false).unwrap();
    assert_eq!(a.load_meta_revision(ALICE).unwrap().1, before);

    // A first write (none read) is made by one host only.
    let (none, zero) = b.load_meta_revision("bob").unwrap();
    assert_eq!((none, zero), (UserMeta::default(), 0));
    let mut mine = UserMeta {
        first_prompt: Some(1),
        ..UserMeta::default()
    };
    a.write_meta("bob", &mine, 0).unwrap();
    mine.first_prompt = Some(2);
    let r = b.write_meta("bob", &mine, 0);
    assert!(matches!(r, Err(StoreError::Conflict { .. })), "{r:?}");
    assert_eq!(a.load_meta("bob").unwrap().first_prompt, Some(1));

    // Many writers at once.
    let stores = [&a, &b];
    let start = Barrier::new(12);
    let outcomes: Vec<(String, bool)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..12)
            .map(|i| {
                let (store, start) = (stores[i % 2], &start);
                s.spawn(move || {
                    start.wait();
                    (0..10)
                        .map(|k| {
                            let rhost = format!("host{i}-{k}");
                            let r = update_meta(store, "dave", &mut |m| {
                                m.remembered.push(device(&rhost));
                                true
                            });
                            match r {
                                Ok(()) => (rhost, true),
                                Err(StoreError::Conflict { .. }) => (rhost, false),
                                Err(e) => panic!("{e}"),
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let made: BTreeSet<String> = outcomes
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(r, _)| r.clone())
        .collect();
    let there: BTreeSet<String> = a
        .load_meta("dave")
        .unwrap()
        .remembered
        .into_iter()
        .map(|r| r.rhost)
        .collect();
    eprintln!(
        "{} of {} changes made, the others refused as conflicts",
        made.len(),
        outcomes.len()
    );
    // Not vacuous: every round of the race has a winner (78 of 120 here).
    assert!(made.len() >= 12, "{outcomes:?}");
    assert_eq!(there, made, "every change made is there, none other");
}

/// A login whose check the database cannot serve (here: another host holds
/// the user's lock past the server's timeout) is refused, and the
/// daemon logs it as that login, naming user, service and what failed,
/// and never the code; the code still works once the lock is let go.
#[test]
fn a_database_fault_in_a_login_is_logged_with_its_user_and_service() {
    test_user(ALICE).unwrap();
    let fleet = Fleet::new().unwrap();
    let bus = Bus::start().unwrap();
    let daemon = Daemon::start(&bus, &fleet.config()).unwrap();
    let pam = PamService::new("").unwrap();
    let e = enroll(&bus, ALICE).unwrap();
    let other = PgStore::new(&fleet.store_config()).unwrap();
    wait_for_step_margin(15);
    let code = oathtool(&e.secret, 1).unwrap();
    let held = other.lock_user(ALICE).unwrap();
    let started = Instant::now();
    let r = pam
        .login(&bus, ALICE, format!("{code}\n").as_bytes())
        .unwrap();
    let took = started.elapsed();
    drop(held);
    assert_eq!(r.code, pam::AUTH_ERR, "{r:?}");
    assert!(r.stderr.contains("cannot read or write its state"), "{r:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("outcome=refused-internal-error"))
        .unwrap_or_else(|| panic!("no login line for the fault:\n{log}"));
    for part in [
        format!("login user={ALICE} service={} ", pam.name),
        "outcome=refused-internal-error: state error: database: ERROR: canceling statement due to"
            .to_string(),
    ] {
        assert!(line.contains(&part), "{part:?} not in {line:?}");
    }
    assert!(!log.contains(&code), "{log}");
    // Logged once: no second, anonymous line for the same fault.
    assert_eq!(log.matches("canceling statement").count(), 1, "{log}");
    let ok = pam
        .login(&bus, ALICE, format!("{code}\n").as_bytes())
        .unwrap();
    assert_eq!(ok.code, pam::SUCCESS, "{ok:?}\n{}", daemon.log());
}
