use super::*;

const TEN_YEARS: u64 = 10 * 365 * 86_400;
const P_SIX_DIGITS_WINDOW_1: f64 = 3.0 / 1_000_000.0;

#[test]
fn waits_grow_then_cap_then_lock() {
    let cfg = ThrottleConfig::default();
    let waits: Vec<u64> = (1..=9).map(|n| wait_after(&cfg, n)).collect();
    assert_eq!(waits, [0, 0, 0, 30, 60, 120, 240, 480, 960]);
    assert_eq!(wait_after(&cfg, 10), 1800);
    assert_eq!(wait_after(&cfg, 100), 1800);
    assert_eq!(wait_after(&cfg, 101), 86_400);
    assert_eq!(wait_after(&cfg, u32::MAX), 86_400);
}

#[test]
fn retry_after_counts_down() {
    let cfg = ThrottleConfig::default();
    assert_eq!(retry_after(&cfg, 4, 1000, 1000), 30);
    assert_eq!(retry_after(&cfg, 4, 1000, 1029), 1);
    assert_eq!(retry_after(&cfg, 4, 1000, 1030), 0);
    assert_eq!(retry_after(&cfg, 2, 1000, 1000), 0);
}

#[test]
fn the_ceiling_lets_a_burst_through_then_one_per_interval() {
    let cfg = ThrottleConfig::default();
    let (burst, interval) = (cfg.account_burst, cfg.account_interval_secs);
    let mut tat = 0;
    for n in 0..burst {
        assert_eq!(ceiling_wait(&cfg, tat, 1000), 0, "failure {n}");
        tat = ceiling_after_failure(&cfg, tat, 1000);
    }
    assert_eq!(ceiling_wait(&cfg, tat, 1000), interval);
    assert_eq!(ceiling_wait(&cfg, tat, 1000 + interval), 0);
    // Idle for a whole bucket's time: full again.
    let later = 1000 + u64::from(burst) * interval * 2;
    assert_eq!(ceiling_wait(&cfg, tat, later), 0);
    // A bucket impossibly far ahead (the clock went back) counts as full.
    assert_eq!(ceiling_wait(&cfg, u64::MAX, 5), 0);
}

#[test]
fn sources_are_addresses_with_ipv6_by_slash_64() {
    assert_eq!(
        Source::remote("192.0.2.7"),
        Source::Address(Ipv4Addr::new(192, 0, 2, 7))
    );
    assert_eq!(
        Source::remote("::ffff:192.0.2.7"),
        Source::Address(Ipv4Addr::new(192, 0, 2, 7))
    );
    assert_eq!(
        Source::remote("2001:db8:1:2:aaaa::1"),
        Source::remote("2001:db8:1:2:bbbb::9")
    );
    assert_ne!(
        Source::remote("2001:db8:1:2::1"),
        Source::remote("2001:db8:1:3::1")
    );
    // Names and loopback addresses: any number for the asking, one count each.
    assert_eq!(Source::remote("a1.example"), Source::remote("a2.example"));
    assert_eq!(Source::remote("127.0.0.1"), Source::remote("127.9.8.7"));
    assert_eq!(Source::remote("::1"), Source::remote("127.0.0.1"));
    assert_ne!(Source::remote("a1.example"), Source::remote("127.0.0.1"));
}

#[test]
fn one_sources_failures_do_not_touch_another_and_success_ends_only_its_own() {
    let cfg = ThrottleConfig::default();
    let (a, b) = (Source::remote("192.0.2.1"), Source::remote("192.0.2.2"));
    let mut t = SourceTable::default();
    for _ in 0..5 {
        t.failed(&cfg, "alice", &a, 100);
    }
    assert_eq!(t.wait(&cfg, "alice", &a, 100), 60);
    assert_eq!(t.wait(&cfg, "alice", &b, 100), 0);
    assert_eq!(t.wait(&cfg, "bob", &a, 100), 0);
    assert_eq!(t.longest_wait(&cfg, "alice", 100), 60);
    t.succeeded(&cfg, "alice", &b, 101);
    assert_eq!(t.wait(&cfg, "alice", &a, 101), 59);
    assert!(t.is_known(&cfg, "alice", &b, 101));
    assert!(!t.is_known(&cfg, "alice", &a, 101));
    assert!(!t.is_known(&cfg, "alice", &b, 101 + KNOWN_SOURCE_SECS));
    // A success forgives a few typos, not a streak: 5 - 4 = 1 left.
    t.succeeded(&cfg, "alice", &a, 200);
    assert_eq!(t.wait(&cfg, "alice", &a, 200), 0);
    assert_eq!(t.tracked(), 1);
    t.succeeded(&cfg, "alice", &a, 201);
    assert_eq!(t.tracked(), 0);
    t.failed(&cfg, "alice", &a, 300);
    t.forget_user("alice");
    assert_eq!(t.tracked(), 0);
    assert!(!t.is_known(&cfg, "alice", &b, 301));
}

#[test]
fn shared_sources_never_become_known_and_guessing_ends_known() {
    let cfg = ThrottleConfig::default();
    let mut t = SourceTable::default();
    for shared in [
        Source::Local(Some(1000)),
        Source::Caller(1000),
        Source::remote("host.example"),
        Source::remote("127.0.0.1"),
        Source::remote("2001:db8::1"),
    ] {
        t.succeeded(&cfg, "alice", &shared, 100);
        assert!(!t.is_known(&cfg, "alice", &shared, 100), "{shared}");
    }
    // Someone behind the owner's address who starts guessing loses the
    // way around the ceiling, whatever the owner's successes before.
    let office = Source::remote("192.0.2.10");
    t.succeeded(&cfg, "alice", &office, 100);
    for _ in 0..=cfg.free_failures {
        t.failed(&cfg, "alice", &office, 101);
    }
    assert!(!t.is_known(&cfg, "alice", &office, 101));
}

#[test]
fn a_clock_set_back_or_ahead_never_holds_anyone_longer_than_a_bucket() {
    let cfg = ThrottleConfig::default();
    let mut t = SourceTable::default();
    let a = Source::remote("192.0.2.1");
    for _ in 0..4 {
        t.failed(&cfg, "alice", &a, 1_000_000);
    }
    // The clock goes back a day: the wait is the back-off, not a day more.
    assert_eq!(t.wait(&cfg, "alice", &a, 1_000_000 - 86_400), 30);
    // A bucket recorded far ahead (the clock ran ahead, then was fixed)
    // counts as full, not as a wait until the clock catches up.
    let ahead = ceiling_after_failure(&cfg, 0, 10_000_000);
    assert_eq!(ceiling_wait(&cfg, ahead, 1_000_000), 0);
}

#[test]
fn the_table_stays_bounded_and_keeps_the_newest_streaks() {
    let cfg = ThrottleConfig::default();
    let mut t = SourceTable::default();
    // One source still waiting (4 failures: 30 s), then many whose wait is over.
    let waiting = Source::Address(Ipv4Addr::new(203, 0, 113, 1));
    for _ in 0..4 {
        t.failed(&cfg, "alice", &waiting, 0);
    }
    let now = 10;
    for i in 0..(MAX_TRACKED as u64 + 10) {
        t.failed(
            &cfg,
            "alice",
            &Source::Address(Ipv4Addr::from(i as u32)),
            now,
        );
    }
    assert!(t.tracked() <= MAX_TRACKED);
    let newest = Source::Address(Ipv4Addr::from(MAX_TRACKED as u32 + 9));
    assert!(
        t.streaks["alice"].contains_key(&newest),
        "the newest was dropped"
    );
    assert_eq!(
        t.wait(&cfg, "alice", &waiting, now),
        20,
        "a wait was cut short"
    );
}

/// The figures in docs/security.md: from one address an attacker gets under 4,000
/// guesses (about 1 %) in ten years; from any number of addresses the
/// account-wide ceiling keeps the chance below 50 % for ten years.
#[test]
fn ten_years_is_not_enough_for_an_even_chance() {
    let cfg = ThrottleConfig::default();
    let one = guesses_within(&cfg, TEN_YEARS, 1);
    let p_one = success_probability(one, P_SIX_DIGITS_WINDOW_1);
    assert!(one < 4_000, "{one} guesses");
    assert!(p_one < 0.02, "{p_one}");

    let ceiling = u64::from(cfg.account_burst) + TEN_YEARS / cfg.account_interval_secs;
    for sources in [2, 16, 256] {
        let many = guesses_within(&cfg, TEN_YEARS, sources);
        assert!(many <= ceiling, "{sources} sources: {many}");
        let p = success_probability(many, P_SIX_DIGITS_WINDOW_1);
        assert!(p < 0.5, "{sources} sources: {many} guesses, p = {p}");
    }
}

/// What a guesser with any number of addresses gets in ten years now
/// that backup codes are checked while the ceiling is spent: the app
/// codes the ceiling lets through, plus one backup code per millisecond
/// (far faster than Argon2 allows) the whole time. Still under 50 %.
#[test]
fn the_backup_way_in_leaves_ten_years_under_an_even_chance() {
    let cfg = ThrottleConfig::default();
    let p_backup = backup_code_p(20);
    assert!(p_backup < 2e-14, "{p_backup}");
    for sources in [1, 16, 1_000_000] {
        let totp = guesses_within(&cfg, TEN_YEARS, sources.min(256));
        let backup = backup_guesses_within(&cfg, TEN_YEARS, sources, BACKUP_CHECK_FLOOR_MS);
        let p = chance(totp, P_SIX_DIGITS_WINDOW_1, backup, p_backup);
        assert!(
            p < 0.5,
            "{sources} sources: {totp} + {backup} guesses, p = {p}"
        );
    }
    // One address is held to its back-off for backup codes too.
    let one = backup_guesses_within(&cfg, TEN_YEARS, 1, BACKUP_CHECK_FLOOR_MS);
    assert_eq!(one, 3_749);
    // Enough addresses meet the one-at-a-time bound.
    assert_eq!(
        backup_guesses_within(&cfg, TEN_YEARS, u32::MAX, BACKUP_CHECK_FLOOR_MS),
        TEN_YEARS * 1000
    );
}

/// The figures for the documentation (`cargo test -p twofoldd --lib
/// horizon_figures -- --nocapture` prints them): guesses and chance in
/// ten years, and the years to an even chance, before and with the
/// backup way in (window 1, 10 backup codes left, at the defaults).
#[test]
fn horizon_figures() {
    let cfg = ThrottleConfig::default();
    let p_backup = backup_code_p(10);
    let year = 365 * 86_400;
    let even = |with_backup: bool| {
        // Whole days, by bisection: the chance grows with the horizon.
        let p_at = |days: u64| {
            let h = days * 86_400;
            let backup = if with_backup {
                backup_guesses_within(&cfg, h, u32::MAX, BACKUP_CHECK_FLOOR_MS)
            } else {
                0
            };
            chance(
                guesses_within(&cfg, h, 256),
                P_SIX_DIGITS_WINDOW_1,
                backup,
                p_backup,
            )
        };
        let (mut lo, mut hi) = (1u64, 40 * 365);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if p_at(mid) >= 0.5 {
                hi = mid
            } else {
                lo = mid + 1
            }
        }
        lo * 86_400
    };
    let totp = guesses_within(&cfg, TEN_YEARS, 256);
    let backup = backup_guesses_within(&cfg, TEN_YEARS, u32::MAX, BACKUP_CHECK_FLOOR_MS);
    let before = chance(totp, P_SIX_DIGITS_WINDOW_1, 0, p_backup);
    let now = chance(totp, P_SIX_DIGITS_WINDOW_1, backup, p_backup);
    let (even_before, even_now) = (even(false), even(true));
    eprintln!("any number of addresses, 10 years, window 1, 10 backup codes:");
    eprintln!(
        "  before: {totp} app-code guesses, chance {:.2} %, 50 % after {:.2} years",
        before * 100.0,
        even_before as f64 / year as f64
    );
    eprintln!(
        "  now: {totp} app-code guesses + {backup} backup-code guesses \
         (one per {BACKUP_CHECK_FLOOR_MS} ms), chance {:.2} %, 50 % after {:.2} years",
        now * 100.0,
        even_now as f64 / year as f64
    );
    assert!(now < 0.5 && even_now > TEN_YEARS, "{now} {even_now}");
    assert!(
        now - before < 0.005,
        "the backup way in costs {}",
        now - before
    );
}

/// One attacking address never empties the account-wide bucket at the
/// defaults, so the owner is not held up anywhere else.
#[test]
fn one_address_never_reaches_the_ceiling() {
    let cfg = ThrottleConfig::default();
    let (mut tat, mut failures, mut t) = (0u64, 0u32, 0u64);
    while t < TEN_YEARS {
        assert_eq!(ceiling_wait(&cfg, tat, t), 0, "at {t} after {failures}");
        failures += 1;
        tat = ceiling_after_failure(&cfg, tat, t);
        t += wait_after(&cfg, failures);
    }
}
