//! Back-off after wrong codes, counted per account *and* source address, with
//! a slower account-wide ceiling. Pure functions of counts and times (and a
//! bounded in-memory table), so the arithmetic in docs/security.md is checked by
//! tests here.
//!
//! - Per source: wrong codes in a row from one address (IPv6: its /64, the
//!   block one host usually holds) wait as `wait_after` says. An attacker's
//!   failures never delay the owner logging in from elsewhere, and the
//!   owner's success does not reset the attacker's count.
//! - Per account: every wrong code, from anywhere, spends one token of a
//!   bucket (`account_burst` tokens, one back every `account_interval_secs`),
//!   which bounds an attacker with many addresses. Addresses that logged this
//!   user in with a code recently skip this ceiling (not their own back-off),
//!   so a distributed attack cannot keep the owner out of their usual hosts.
//! - While the ceiling is spent, backup codes (50 bits each) are still
//!   checked from everywhere, each source under its own back-off, and spend
//!   no token: the owner always has a way in, and the guesser gains nothing
//!   measurable (`backup_guesses_within`, `chance`).

use crate::bucket::Bucket;
use crate::config::ThrottleConfig;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr};

/// Successful logins make an address "known" to an account for this long.
pub const KNOWN_SOURCE_SECS: u64 = 30 * 86_400;
/// Entries kept in memory before the oldest are dropped. A dropped entry only
/// forgets a per-source count; the account-wide ceiling is on disk.
const MAX_TRACKED: usize = 100_000;
/// Known addresses kept per account.
const MAX_KNOWN_PER_USER: usize = 16;

/// Where a code came from, as counted by the throttle.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// One IPv4 address.
    Address(Ipv4Addr),
    /// An IPv6 /64 (its first four segments): the block one host usually holds.
    Ipv6Block([u16; 4]),
    /// Every remote host given by name (an application other than sshd, which
    /// names the address): whoever runs their own DNS can have any number.
    HostNames,
    /// Every loopback address: anyone on this host can connect from any 127.x.
    Loopback,
    /// The PAM stack without a remote host (console, su, sudo), by the real
    /// uid of the process that runs it: the user who typed `su` or `sudo`
    /// (root at the console), so someone guessing through `su owner` has a
    /// count apart from the owner's own sudo. `None`: not known.
    Local(Option<u32>),
    /// A program running as this uid (a screen locker, `twofold`), whose word
    /// about the remote host is not trusted.
    Caller(u32),
}

impl Source {
    /// The source of a remote host the PAM stack (root) named.
    pub fn remote(rhost: &str) -> Self {
        let ip = match rhost.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            Ok(ip) => ip,
            Err(_) => return Self::HostNames,
        };
        match ip {
            _ if ip.is_loopback() => Self::Loopback,
            IpAddr::V4(v4) => Self::Address(v4),
            IpAddr::V6(v6) => {
                let s = v6.segments();
                Self::Ipv6Block([s[0], s[1], s[2], s[3]])
            }
        }
    }

    /// Whether a success from here may let this source skip the account-wide
    /// ceiling later: only one host's own address. Not `local` or a uid
    /// (shared by every local user, and by the owner with whoever has their
    /// password), not host names or loopback (any number of each), and not
    /// an IPv6 /64 (shared by a hotel's or a cloud's hosts).
    fn may_become_known(&self) -> bool {
        matches!(self, Self::Address(_))
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Address(a) => write!(f, "{a}"),
            Self::Ipv6Block([a, b, c, d]) => write!(f, "{a:x}:{b:x}:{c:x}:{d:x}::/64"),
            Self::HostNames => f.write_str("host names"),
            Self::Loopback => f.write_str("loopback"),
            Self::Local(None) => f.write_str("local"),
            Self::Local(Some(uid)) => write!(f, "local (uid {uid})"),
            Self::Caller(uid) => write!(f, "uid {uid}"),
        }
    }
}

/// Seconds a source must wait after its `failures`-th wrong code in a row.
pub fn wait_after(cfg: &ThrottleConfig, failures: u32) -> u64 {
    if failures <= cfg.free_failures {
        return 0;
    }
    if failures > cfg.lockout_after {
        return cfg.lockout_secs;
    }
    let doublings = failures - cfg.free_failures - 1;
    let factor = 1u64.checked_shl(doublings.min(63)).unwrap_or(u64::MAX);
    cfg.base_delay_secs
        .saturating_mul(factor)
        .min(cfg.max_delay_secs)
}

/// Seconds from `now` until a code may be verified again (0: now).
pub fn retry_after(cfg: &ThrottleConfig, failures: u32, last_failure: u64, now: u64) -> u64 {
    let allowed_at = last_failure.saturating_add(wait_after(cfg, failures));
    allowed_at.saturating_sub(now)
}

/// The account-wide bucket, in seconds.
fn ceiling(cfg: &ThrottleConfig) -> Bucket {
    Bucket {
        burst: u64::from(cfg.account_burst),
        interval: cfg.account_interval_secs,
    }
}

/// The account-wide bucket after a wrong code at `now` (what the journal records).
pub fn ceiling_after_failure(cfg: &ThrottleConfig, tat: u64, now: u64) -> u64 {
    ceiling(cfg).spend(tat, now)
}

/// Seconds until the account-wide ceiling lets a code be checked (0: now).
pub fn ceiling_wait(cfg: &ThrottleConfig, tat: u64, now: u64) -> u64 {
    ceiling(cfg).wait(tat, now)
}

#[derive(Debug, Clone, Copy)]
struct Streak {
    failures: u32,
    last: u64,
}

impl Streak {
    /// A failure "after now" means the clock went back: the wait counts
    /// from now, never longer than the back-off itself.
    fn wait(self, cfg: &ThrottleConfig, now: u64) -> u64 {
        retry_after(cfg, self.failures, self.last.min(now), now)
    }
}

/// Wrong codes in a row per account and source, and the sources that logged
/// each account in recently. In memory: a restart forgets them, and the
/// account-wide ceiling, which is on disk, still holds.
#[derive(Debug, Default)]
pub struct SourceTable {
    streaks: HashMap<String, HashMap<Source, Streak>>,
    tracked: usize,
    known: HashMap<String, Vec<(Source, u64)>>,
}

impl SourceTable {
    /// Seconds `source` must wait before a code for `user` is checked.
    pub fn wait(&self, cfg: &ThrottleConfig, user: &str, source: &Source, now: u64) -> u64 {
        self.streaks
            .get(user)
            .and_then(|m| m.get(source))
            .map_or(0, |s| s.wait(cfg, now))
    }

    /// The longest wait of any source for `user`, and wrong codes in a row from it.
    pub fn longest_wait(&self, cfg: &ThrottleConfig, user: &str, now: u64) -> u64 {
        self.streaks.get(user).map_or(0, |m| {
            m.values().map(|s| s.wait(cfg, now)).max().unwrap_or(0)
        })
    }

    pub fn failed(&mut self, cfg: &ThrottleConfig, user: &str, source: &Source, now: u64) {
        if self.tracked >= MAX_TRACKED {
            self.make_room(cfg, now);
        }
        let per_user = self.streaks.entry(user.to_string()).or_default();
        let streak = per_user.entry(source.clone()).or_insert_with(|| {
            self.tracked += 1;
            Streak {
                failures: 0,
                last: 0,
            }
        });
        streak.failures = streak.failures.saturating_add(1);
        // The time of the latest failure, even if the clock went back.
        streak.last = now;
    }

    /// A code from `source` was right. It forgives the source's last few
    /// failures (typos before it), not a long streak: the source may be
    /// shared (a NAT, `local`) with someone guessing. A single host's
    /// address becomes known.
    pub fn succeeded(&mut self, cfg: &ThrottleConfig, user: &str, source: &Source, now: u64) {
        let forgiven = cfg.free_failures.saturating_add(1);
        if let Some(m) = self.streaks.get_mut(user)
            && let Some(s) = m.get_mut(source)
        {
            s.failures = s.failures.saturating_sub(forgiven);
            if s.failures == 0 {
                self.end_streak(user, source);
            }
        }
        if !source.may_become_known() {
            return;
        }
        let known = self.known.entry(user.to_string()).or_default();
        known.retain(|(s, at)| s != source && at.saturating_add(KNOWN_SOURCE_SECS) > now);
        if known.len() >= MAX_KNOWN_PER_USER {
            known.remove(0);
        }
        known.push((source.clone(), now));
    }

    /// Whether `source` may skip the account-wide ceiling for `user`: it
    /// logged the user in with a code within `KNOWN_SOURCE_SECS`, and has not
    /// been guessing since (no more wrong codes than the free ones).
    pub fn is_known(&self, cfg: &ThrottleConfig, user: &str, source: &Source, now: u64) -> bool {
        let guessing = self
            .streaks
            .get(user)
            .and_then(|m| m.get(source))
            .is_some_and(|s| s.failures > cfg.free_failures);
        !guessing
            && self.known.get(user).is_some_and(|k| {
                k.iter()
                    .any(|(s, at)| s == source && at.saturating_add(KNOWN_SOURCE_SECS) > now)
            })
    }

    /// An administrator's unlock: every count starts over.
    pub fn forget_streaks(&mut self, user: &str) {
        if let Some(m) = self.streaks.remove(user) {
            self.tracked -= m.len();
        }
    }

    /// A new key (enrollment, reset, disable): the counts start over, and
    /// no address is known for it yet.
    pub fn forget_user(&mut self, user: &str) {
        self.forget_streaks(user);
        self.known.remove(user);
    }

    fn end_streak(&mut self, user: &str, source: &Source) {
        if let Some(m) = self.streaks.get_mut(user) {
            if m.remove(source).is_some() {
                self.tracked -= 1;
            }
            if m.is_empty() {
                self.streaks.remove(user);
            }
        }
    }

    /// At capacity: forget the streaks whose wait is over, the shortest
    /// first, until half the table is free; a streak still waiting is never
    /// forgotten (that would end its wait). If every streak is waiting, the
    /// table grows: each entry cost an attacker a checked code, which the
    /// account-wide ceiling rations.
    fn make_room(&mut self, cfg: &ThrottleConfig, now: u64) {
        let mut ended: Vec<(u32, u64)> = self
            .streaks
            .values()
            .flat_map(|m| m.values())
            .filter(|s| s.wait(cfg, now) == 0)
            .map(|s| (s.failures, s.last))
            .collect();
        let excess = self
            .tracked
            .saturating_sub(MAX_TRACKED / 2)
            .min(ended.len());
        if excess == 0 {
            return;
        }
        ended.sort_unstable();
        let cutoff = ended[excess - 1];
        for m in self.streaks.values_mut() {
            m.retain(|_, s| s.wait(cfg, now) > 0 || (s.failures, s.last) > cutoff);
        }
        self.streaks.retain(|_, m| !m.is_empty());
        self.tracked = self.streaks.values().map(HashMap::len).sum();
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.tracked
    }
}

/// An attacker guessing one account's codes from `sources` addresses (none of
/// them known to the account), each as soon as both its own back-off and the
/// account-wide ceiling allow, for `horizon_secs`. Returns the number of codes
/// the daemon checks. The owner's logins change nothing here: they reset only
/// the owner's own source.
pub fn guesses_within(cfg: &ThrottleConfig, horizon_secs: u64, sources: u32) -> u64 {
    use std::cmp::Reverse;
    let mut ready: BinaryHeap<Reverse<(u64, u32)>> =
        (0..sources.max(1)).map(|i| Reverse((0, i))).collect();
    let mut failures = vec![0u32; sources.max(1) as usize];
    let (mut tat, mut guesses) = (0u64, 0u64);
    while let Some(Reverse((ready_at, i))) = ready.pop() {
        let t = ready_at.max(ceiling(cfg).fits_from(tat));
        if t >= horizon_secs {
            break;
        }
        guesses += 1;
        let f = &mut failures[i as usize];
        *f = f.saturating_add(1);
        tat = ceiling_after_failure(cfg, tat, t);
        ready.push(Reverse((t.saturating_add(wait_after(cfg, *f)), i)));
    }
    guesses
}

/// Backup codes an attacker can have checked while the ceiling is spent
/// (which never refuses them), from `sources` addresses in `horizon_secs`:
/// each source is under its own back-off, which its app-code guesses share
/// (so at most what one source gets without a ceiling), and the account's
/// codes are checked one at a time (the account's lock around the Argon2
/// hash), so never more than one per `check_ms`. An upper bound: it counts
/// the ceiling as spent for the whole horizon.
pub fn backup_guesses_within(
    cfg: &ThrottleConfig,
    horizon_secs: u64,
    sources: u32,
    check_ms: u64,
) -> u64 {
    let by_time = horizon_secs.saturating_mul(1000) / check_ms.max(1);
    // Past this many sources the time bound is the smaller: no need to count.
    if u64::from(sources) >= by_time {
        return by_time;
    }
    let without_ceiling = ThrottleConfig {
        account_burst: u32::MAX,
        account_interval_secs: 1,
        ..cfg.clone()
    };
    let per_source = guesses_within(&without_ceiling, horizon_secs, 1);
    per_source.saturating_mul(u64::from(sources)).min(by_time)
}

/// The fastest the model lets one backup code be checked, in milliseconds:
/// an Argon2id hash at the default cost (19 MiB, 2 passes) takes tens of
/// milliseconds; 1 ms leaves a wide margin for faster hardware.
pub const BACKUP_CHECK_FLOOR_MS: u64 = 1;

/// Chance that one random backup code is one of `codes` unused ones: the
/// codes are `BACKUP_CODE_LEN` characters of a 32-letter alphabet (50 bits).
pub fn backup_code_p(codes: u32) -> f64 {
    let space = (twofold_protocol::code::BACKUP_ALPHABET.len() as f64)
        .powi(twofold_protocol::code::BACKUP_CODE_LEN as i32);
    f64::from(codes) / space
}

/// Chance that at least one guess wins, from `totp` app-code guesses that
/// each win with `p_totp` and `backup` backup-code guesses that each win
/// with `p_backup` (computed through logarithms: `p_backup` is about 10⁻¹⁴).
pub fn chance(totp: u64, p_totp: f64, backup: u64, p_backup: f64) -> f64 {
    let miss = totp as f64 * (-p_totp).ln_1p() + backup as f64 * (-p_backup).ln_1p();
    -miss.exp_m1()
}

/// Chance that at least one of `guesses` random codes is accepted when each
/// wins with probability `p` (3 in 10^6 for 6 digits and a window of 1).
pub fn success_probability(guesses: u64, p: f64) -> f64 {
    1.0 - (1.0 - p).powf(guesses as f64)
}

/// Why a code is not checked now: wrong codes from this source (`own`
/// seconds left), or from everywhere for this account (the account-wide
/// ceiling, `ceiling` seconds left). While only the ceiling holds, backup
/// codes are still checked: the owner always has a way in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub own: u64,
    pub ceiling: u64,
}

impl Hold {
    pub fn wait(self) -> u64 {
        self.own.max(self.ceiling)
    }

    /// Only the ceiling holds: a backup code is checked, nothing else.
    pub fn backup_only(self) -> bool {
        self.own == 0
    }
}

#[cfg(test)]
mod tests;
