//! The precedence and the schedule, on fixed dates.

use super::*;
use std::path::Path;
use time::macros::date;

const POLICY: &str = r#"
support = "Help: it@example.com"
unenrolled_require = "enroll"
trusted_networks = ["10.1.0.0/16", "192.0.2.7"]
remember_device_secs = 2592000

[default]
mode = "optional"
schedule = [ { from = 2026-06-11, mode = "recommend" }, { from = 2026-07-31, mode = "require" } ]
grace_days = 14

[[rule]]
name = "ftp"
groups = ["ftpusers"]
services = ["vsftpd"]
mode = "exempt"

[[rule]]
name = "automation"
groups = ["robots"]
mode = "exempt"

[[rule]]
name = "admins"
groups = ["sudo", "wheel"]
mode = "require"
"#;

fn policy() -> Policy {
    parse(POLICY, Path::new("/etc/twofold/policy.toml")).unwrap()
}

fn subject<'a>(groups: &[&str], service: &'a str) -> Subject<'a> {
    Subject {
        user: "alice",
        groups: Ok(groups.iter().map(|g| g.to_string()).collect()),
        service,
    }
}

#[test]
fn the_shipped_example_parses() {
    let text = include_str!("../../../packaging/policy.toml");
    let p = parse(text, Path::new("policy.toml")).unwrap();
    assert_eq!(p.default.mode_on(date!(2026 - 01 - 01)), Mode::Recommend);
}

#[test]
fn no_file_means_recommend_for_everyone() {
    let p = Policy::default();
    let d = p.decide(&subject(&["sudo"], "sshd"), None, date!(2030 - 01 - 01));
    assert_eq!((d.rule.as_str(), d.mode), ("default", Mode::Recommend));
}

#[test]
fn first_matching_rule_wins_and_service_narrows() {
    let p = policy();
    let today = date!(2026 - 05 - 01);
    // In both ftpusers and sudo: exempt for vsftpd (ftp comes first), require for sshd.
    let ftp = p.decide(&subject(&["ftpusers", "sudo"], "vsftpd"), None, today);
    assert_eq!((ftp.rule.as_str(), ftp.mode), ("ftp", Mode::Exempt));
    let ssh = p.decide(&subject(&["ftpusers", "sudo"], "sshd"), None, today);
    assert_eq!((ssh.rule.as_str(), ssh.mode), ("admins", Mode::Require));
    assert!(
        ssh.steps
            .iter()
            .any(|s| s.contains("only for service vsftpd")),
        "{:?}",
        ssh.steps
    );
    // Robots and admins: the earlier rule wins.
    let both = p.decide(&subject(&["wheel", "robots"], "sshd"), None, today);
    assert_eq!(
        (both.rule.as_str(), both.mode),
        ("automation", Mode::Exempt)
    );
    let nobody = p.decide(&subject(&["users"], "sshd"), None, today);
    assert_eq!(
        (nobody.rule.as_str(), nobody.mode),
        ("default", Mode::Optional)
    );
}

#[test]
fn overrides_come_first() {
    let p = policy();
    let d = p.decide(
        &subject(&["robots"], "sshd"),
        Some(Mode::Require),
        date!(2026 - 05 - 01),
    );
    assert_eq!((d.rule.as_str(), d.mode), ("override", Mode::Require));
    let d = p.decide(
        &subject(&["sudo"], "sshd"),
        Some(Mode::Exempt),
        date!(2026 - 05 - 01),
    );
    assert_eq!(d.mode, Mode::Exempt);
}

#[test]
fn schedule_switches_on_its_dates() {
    let p = policy();
    let s = subject(&[], "sshd");
    let at = |d| p.decide(&s, None, d);
    assert_eq!(at(date!(2026 - 06 - 10)).mode, Mode::Optional);
    assert_eq!(at(date!(2026 - 06 - 11)).mode, Mode::Recommend);
    let before = at(date!(2026 - 07 - 19));
    assert_eq!(before.mode, Mode::Recommend);
    assert_eq!(before.enforcement, Some(date!(2026 - 07 - 31)));
    assert_eq!(before.days_left(date!(2026 - 07 - 19)), 12);
    let after = at(date!(2026 - 07 - 31));
    assert_eq!((after.mode, after.enforcement), (Mode::Require, None));
    assert_eq!(after.grace_days, 14);
}

#[test]
fn a_clock_past_the_last_date_gets_the_latest_mode() {
    let end = Date::MAX.midnight().assume_utc().unix_timestamp();
    let end = u64::try_from(end).unwrap();
    assert_eq!(date_of(0), date!(1970 - 01 - 01));
    assert_eq!(date_of(end), Date::MAX);
    for past in [end + 86_400, end + 10 * 86_400, i64::MAX as u64, u64::MAX] {
        assert_eq!(date_of(past), Date::MAX, "{past}");
    }
    let p = policy();
    let d = p.decide(&subject(&[], "sshd"), None, date_of(u64::MAX));
    assert_eq!((d.mode, d.enforcement), (Mode::Require, None));
}

#[test]
fn an_nss_failure_never_weakens_the_policy() {
    let p = policy();
    let broken = Subject {
        user: "alice",
        groups: Err("LDAP down".into()),
        service: "sshd",
    };
    let d = p.decide(&broken, None, date!(2026 - 05 - 01));
    assert_eq!((d.rule.as_str(), d.mode), ("strictest", Mode::Require));
    assert!(d.steps.iter().any(|s| s.contains("LDAP down")));
    assert_eq!(
        p.strictest_for(&Err("x".into()), None, date!(2026 - 05 - 01)),
        Mode::Require
    );
}

#[test]
fn strictest_for_looks_at_every_service() {
    let p = policy();
    let groups = Ok(["ftpusers".to_string()].into_iter().collect());
    assert_eq!(
        p.strictest_for(&groups, None, date!(2026 - 05 - 01)),
        Mode::Optional
    );
    let admins = Ok(["sudo".to_string()].into_iter().collect());
    assert_eq!(
        p.strictest_for(&admins, None, date!(2026 - 05 - 01)),
        Mode::Require
    );
}

#[test]
fn trusted_networks_match_addresses_only() {
    let p = policy();
    assert!(p.trusted("10.1.200.3").is_some());
    assert!(p.trusted("192.0.2.7").is_some());
    assert!(p.trusted("192.0.2.8").is_none());
    assert!(p.trusted("trusted.example.com").is_none());
    assert!(p.trusted("").is_none());
}

#[test]
fn errors_name_the_line() {
    let cases = [
        ("[default]\nmode = \"sometimes\"\n", 2, "unknown variant"),
        (
            "[default]\nmode = \"require\"\nsurprise = 1\n",
            3,
            "unknown field",
        ),
        (
            "[default]\nmode = \"require\"\n[[rule]]\nname = \"a\"\ngroups = []\nmode = \"exempt\"\n",
            4,
            "at least one group",
        ),
        (
            "[default]\nmode = \"require\"\n[[rule]]\nname = \"a\"\ngroups = [\"x\"]\nmode = \"exempt\"\n[[rule]]\nname = \"a\"\ngroups = [\"y\"]\nmode = \"exempt\"\n",
            4,
            "used twice",
        ),
        (
            "trusted_networks = [\"10.0.0.0/33\"]\n[default]\nmode = \"require\"\n",
            1,
            "not an address",
        ),
        (
            "[default]\nmode = \"optional\"\nschedule = [ { from = 2026-07-31, mode = \"require\" }, { from = 2026-06-11, mode = \"recommend\" } ]\n",
            3,
            "increasing order",
        ),
        (
            "[default]\nmode = \"optional\"\nschedule = [ { from = 2026-07-31T10:00:00, mode = \"require\" } ]\n",
            3,
            "plain dates",
        ),
        ("support = \"x\"\n", 1, "missing field `default`"),
        (
            "[default]\nmode = \"require\"\nmethods = [\"sms\"]\n",
            3,
            "\"sms\" is not a method",
        ),
        (
            "[default]\nmode = \"require\"\nmethods = []\n",
            3,
            "at least one method",
        ),
    ];
    for (text, line, words) in cases {
        let e = parse(text, Path::new("/p.toml")).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("/p.toml:{line}:")) && e.contains(words),
            "{text:?}: {e}"
        );
    }
}

/// The seed's rollout: e-mail codes required from one date with the app
/// optional, then either; a schedule entry without methods keeps them.
#[test]
fn methods_follow_the_schedule() {
    let p = parse(
        "[default]\nmode = \"recommend\"\n\
         [[default.schedule]]\nfrom = 2026-07-13\nmode = \"require\"\nmethods = [\"email\"]\n\
         [[default.schedule]]\nfrom = 2026-07-31\nmode = \"require\"\nmethods = [\"totp\", \"email\"]\n\
         [[default.schedule]]\nfrom = 2026-08-31\nmode = \"require\"\n\
         [[rule]]\nname = \"app\"\ngroups = [\"ops\"]\nmode = \"require\"\nmethods = [\"totp\"]\n",
        Path::new("/p.toml"),
    )
    .unwrap();
    let s = subject(&[], "sshd");
    let at = |d| p.decide(&s, None, d).methods;
    assert_eq!(at(date!(2026 - 07 - 01)), Methods::ANY);
    assert_eq!(
        at(date!(2026 - 07 - 13)),
        Methods {
            totp: false,
            email: true
        }
    );
    assert_eq!(at(date!(2026 - 07 - 31)), Methods::ANY);
    assert_eq!(at(date!(2026 - 09 - 01)), Methods::ANY, "kept from before");
    let ops = p.decide(&subject(&["ops"], "sshd"), None, date!(2026 - 07 - 13));
    assert_eq!(ops.methods.names(), "totp");
    assert!(
        ops.steps.iter().any(|s| s == "methods today: totp only"),
        "{:?}",
        ops.steps
    );
    assert!(p.restricts_methods());
    assert!(!policy().restricts_methods());
    // An override accepts every method; so does the default policy.
    assert_eq!(
        p.decide(&s, Some(Mode::Require), date!(2026 - 07 - 13))
            .methods,
        Methods::ANY
    );
}
