//! Crash safety: logins with TOTP codes, logins with backup codes and
//! enrollments run against a real twofoldd, which is killed with SIGKILL at
//! a random moment during each operation and started again. After every
//! restart the test checks that
//! - the daemon starts (a torn state file is detected, never taken as
//!   "not enrolled"),
//! - every enrollment confirmed to a user is still there,
//! - a TOTP code that was accepted is refused when replayed,
//! - a backup code that was accepted is refused when used again.
//!
//! Sized for CI (`TWOFOLD_CRASH_KILLS`, default 30); `TWOFOLD_CRASH_KILLS=1000
//! cargo test -p twofold-e2e --test crash -- --nocapture` is the long run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::print_stdout)]

use rand::Rng;
use std::time::Duration;
use twofold_e2e::*;

const USERS: usize = 12;

struct User {
    name: String,
    /// The secret of the enrollment confirmed to this user, if any.
    secret: Option<String>,
    /// Backup codes not yet tried.
    backup: Vec<String>,
    /// The last TOTP step that may have been used (accepted or in flight).
    last_step: u64,
}

#[derive(Default, Debug)]
struct Counts {
    kills: u32,
    operations: u32,
    accepted_totp: u32,
    accepted_backup: u32,
    confirmed_enrollments: u32,
    lost_enrollments: u32,
    totp_replays_accepted: u32,
    backup_reuses_accepted: u32,
    failed_restarts: u32,
}

fn step_now() -> u64 {
    unix_now() / 30
}

fn enrolled(bus: &Bus, user: &str) -> Option<bool> {
    let out = bus.twofold(&["admin", "status", user, "--json"]).ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("\"enrolled\":true") {
        Some(true)
    } else if text.contains("\"enrolled\":false") {
        Some(false)
    } else {
        None
    }
}

/// `twofold admin reset USER`; whether it succeeded (the daemon may be
/// killed while it runs).
fn reset(bus: &Bus, user: &str) -> bool {
    bus.twofold(&["admin", "reset", user, "--yes"])
        .is_ok_and(|out| out.status.success())
}

#[test]
fn sigkill_at_random_moments_loses_nothing_confirmed_and_accepts_nothing_twice() {
    let kills: u32 = std::env::var("TWOFOLD_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let bus = Bus::start().unwrap();
    let mut daemon = Daemon::start(&bus, "").unwrap();
    let pam = PamService::new("").unwrap();
    let mut users: Vec<User> = (0..USERS)
        .map(|i| {
            let name = format!("tf-crash-{i:02}");
            test_user(&name).unwrap();
            User {
                name,
                secret: None,
                backup: Vec::new(),
                last_step: 0,
            }
        })
        .collect();
    let mut rng = rand::rng();
    let mut n = Counts::default();
    // Everyone enrolled before the first kill, so that every round can be
    // any of the three operations (an enrollment round re-enrolls).
    for user in &mut users {
        let e = enroll_confirming(&bus, &user.name, 0).unwrap();
        user.secret = Some(e.secret);
        user.backup = e.backup_codes;
        user.last_step = step_now();
        n.confirmed_enrollments += 1;
    }

    for round in 0..kills {
        let pid = daemon.pid().unwrap() as libc::pid_t;
        // (what was done, the replay to try after the restart if it was accepted)
        let mut replay: Option<(usize, String, bool)> = None;
        let who = round as usize % USERS;
        let op = match (rng.random_range(0..3), &users[who]) {
            (_, u) if u.secret.is_none() => 0,
            (1, u) if u.backup.is_empty() => 2,
            (op, _) => op,
        };
        // Somewhere within the operation, or after it: an enrollment takes
        // a few hundred ms (ten Argon2id hashes), a backup code tens, a TOTP
        // code a few; the spans are about twice that, so that about half
        // the operations complete and their replay is checked.
        let span_us = [600_000, 300_000, 80_000][op];
        let delay = Duration::from_micros(rng.random_range(0..span_us));
        n.operations += 1;
        std::thread::scope(|scope| {
            let user = &mut users[who];
            let killer = scope.spawn(move || {
                std::thread::sleep(delay);
                // SAFETY: kill(2) on the daemon's pid, which is our child
                // and not yet reaped, so the pid cannot have been reused.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            });
            match (op, user.secret.clone()) {
                // Enroll (again, after a reset): confirmed only if setup
                // printed the backup codes.
                (0, _) | (_, None) => {
                    // Killed during the reset: the enrollment below fails
                    // (already enrolled) and the next round resets again.
                    reset(&bus, &user.name);
                    user.secret = None;
                    user.backup.clear();
                    if let Ok(e) = enroll_confirming(&bus, &user.name, 0) {
                        user.secret = Some(e.secret);
                        user.backup = e.backup_codes;
                        user.last_step = step_now();
                        n.confirmed_enrollments += 1;
                    }
                }
                // A backup code.
                (1, Some(_)) => {
                    let code = user.backup.pop().unwrap();
                    let r = pam
                        .login(&bus, &user.name, format!("{code}\n").as_bytes())
                        .unwrap();
                    if r.code == pam::SUCCESS {
                        n.accepted_backup += 1;
                        replay = Some((who, code, false));
                    }
                }
                // A TOTP code for a step not used yet.
                (_, Some(secret)) => {
                    let now = step_now();
                    let step = (now.max(user.last_step + 1)).min(now + 1);
                    if step > user.last_step {
                        user.last_step = step;
                        let code = oathtool(&secret, step as i64 - now as i64).unwrap();
                        let r = pam
                            .login(&bus, &user.name, format!("{code}\n").as_bytes())
                            .unwrap();
                        if r.code == pam::SUCCESS {
                            n.accepted_totp += 1;
                            replay = Some((who, code, true));
                        }
                    }
                }
            }
            killer.join().unwrap();
        });
        n.kills += 1;
        if daemon.restart().is_err() {
            n.failed_restarts += 1;
            panic!(
                "twofoldd did not start again after kill {}:\n{}",
                n.kills,
                daemon.log()
            );
        }
        // Nothing accepted before the kill is accepted again.
        if let Some((who, code, totp)) = replay {
            let again = pam
                .login(&bus, &users[who].name, format!("{code}\n").as_bytes())
                .unwrap();
            if again.code == pam::SUCCESS {
                if totp {
                    n.totp_replays_accepted += 1;
                } else {
                    n.backup_reuses_accepted += 1;
                }
            }
        }
        // Every confirmed enrollment is still there.
        for user in users.iter().filter(|u| u.secret.is_some()) {
            match enrolled(&bus, &user.name) {
                Some(true) => {}
                Some(false) => n.lost_enrollments += 1,
                None => panic!(
                    "no status for {} after a restart:\n{}",
                    user.name,
                    daemon.log()
                ),
            }
        }
    }
    // The confirmed secrets are the stored ones: a fresh code works for each.
    for user in users.iter_mut().filter(|u| u.secret.is_some()) {
        let now = step_now();
        if user.last_step > now {
            continue; // its next step is spent already
        }
        user.last_step = now + 1;
        let code = oathtool(user.secret.as_ref().unwrap(), 1).unwrap();
        let r = pam
            .login(&bus, &user.name, format!("{code}\n").as_bytes())
            .unwrap();
        assert_eq!(
            r.code,
            pam::SUCCESS,
            "{}: {r:?}\n{}",
            user.name,
            daemon.log()
        );
    }
    for user in &users {
        assert!(reset(&bus, &user.name), "reset {}", user.name);
    }
    println!("crash safety: {n:?}");
    assert_eq!(n.failed_restarts, 0);
    assert_eq!(n.lost_enrollments, 0, "{n:?}");
    assert_eq!(n.totp_replays_accepted, 0, "{n:?}");
    assert_eq!(n.backup_reuses_accepted, 0, "{n:?}");
    // The run exercised what it claims to (the kills did not all land first).
    assert!(
        n.accepted_totp + n.accepted_backup > 0 && n.confirmed_enrollments > 0,
        "{n:?}"
    );
}
