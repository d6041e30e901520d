use super::*;

fn parse_str(text: &str) -> Result<Config, String> {
    parse(text, Path::new("/etc/twofold/twofold.toml")).map_err(|e| e.to_string())
}

/// The documented sample in packaging/ is exactly the built-in defaults.
#[test]
fn shipped_sample_is_the_defaults() {
    let text = include_str!("../../../packaging/twofold.toml");
    assert_eq!(parse_str(text).unwrap(), Config::default());
}

#[test]
fn empty_file_means_defaults() {
    assert_eq!(parse_str("").unwrap(), Config::default());
}

#[test]
fn full_file_parses() {
    let c = parse_str(
        "state_dir = \"/srv/tf\"\nadmin_group = \"wheel\"\n[totp]\nissuer = \"Example\"\ndigits = 8\nperiod = 60\nwindow = 2\n[throttle]\nfree_failures = 5\n",
    )
    .unwrap();
    assert_eq!(c.state_dir, PathBuf::from("/srv/tf"));
    assert_eq!(c.totp.digits, 8);
    assert_eq!(c.throttle.free_failures, 5);
    assert_eq!(c.throttle.max_delay_secs, 1800);
}

#[test]
fn syntax_error_names_file_and_line() {
    let e = parse_str("admin_group = \"x\"\n[totp]\ndigits = = 6\n").unwrap_err();
    assert!(e.starts_with("/etc/twofold/twofold.toml:3:"), "{e}");
}

#[test]
fn unknown_key_is_an_error() {
    let e = parse_str("[totp]\ndigts = 6\n").unwrap_err();
    assert!(e.starts_with("/etc/twofold/twofold.toml:2:"), "{e}");
    assert!(e.contains("digts"), "{e}");
}

#[test]
fn wrong_type_is_an_error() {
    let e = parse_str("[totp]\nwindow = \"one\"\n").unwrap_err();
    assert!(e.starts_with("/etc/twofold/twofold.toml:2:"), "{e}");
}

#[test]
fn low_backup_codes_and_log_file_are_checked() {
    let e = parse_str("[enrollment]\nbackup_codes = 5\nlow_backup_codes = 5\n").unwrap_err();
    assert!(
        e.contains(":3:") && e.contains("below enrollment.backup_codes (5), not 5"),
        "{e}"
    );
    assert!(parse_str("[enrollment]\nlow_backup_codes = 0\n").is_ok());
    let e = parse_str("log_file = \"twofoldd.log\"\n").unwrap_err();
    assert!(e.contains("log_file must be an absolute path"), "{e}");
    assert!(parse_str("log_file = \"\"\n").is_ok());
}

#[test]
fn out_of_range_value_names_its_line() {
    let e = parse_str("# c\n[totp]\nissuer = \"x\"\n  digits = 9\n").unwrap_err();
    assert_eq!(
        e,
        "/etc/twofold/twofold.toml:4:3: totp.digits must be 6, 7 or 8, not 9"
    );
    let e = parse_str("[throttle]\nlockout_secs = 99999999\n").unwrap_err();
    assert!(
        e.contains(":2:1:") && e.contains("a lockout must end"),
        "{e}"
    );
    assert!(
        parse_str("state_dir = \"relative\"\n")
            .unwrap_err()
            .contains(":1:1:")
    );
}

#[test]
fn store_section_is_checked() {
    let c = parse_str(
        "[store]\nbackend = \"postgresql\"\nconnection = \"host=/run/postgresql,/srv/pg dbname=twofold user=twofold target_session_attrs=read-write\"\n",
    )
    .unwrap();
    assert_eq!(c.store.backend, Backend::Postgresql);
    parse_str(
        "[store]\nbackend = \"postgresql\"\nconnection = \"host=db1.example,db2.example dbname=twofold user=twofold sslmode=require target_session_attrs=read-write\"\n",
    )
    .unwrap();
    for (text, line, words) in [
        ("[store]\nbackend = \"postgres\"\n", 2, "unknown variant"),
        ("[store]\nbackend = \"postgresql\"\n", 1, "must be set"),
        (
            "[store]\nbackend = \"postgresql\"\nconnection = \"host=/x nosuch=1\"\n",
            3,
            "does not parse",
        ),
        (
            "[store]\nbackend = \"postgresql\"\nconnection = \"host=/x password=hunter2\"\n",
            3,
            "password_file",
        ),
        (
            "[store]\nbackend = \"postgresql\"\nconnection = \"host=db.example dbname=twofold\"\n",
            3,
            "sslmode=require",
        ),
        (
            "[store]\nbackend = \"postgresql\"\nconnection = \"host=db.example sslmode=prefer\"\n",
            3,
            "sslmode=require",
        ),
        ("[store]\nfleet_key_file = \"fleet.key\"\n", 2, "absolute"),
        ("[store]\nconnect_timeout_secs = 30\n", 2, "1 to 10"),
        ("[store]\npool_size = 0\n", 2, "1 to 64"),
        (
            "[store]\nclient_cert_file = \"/etc/c.pem\"\n",
            1,
            "go together",
        ),
    ] {
        let e = parse_str(text).unwrap_err();
        assert!(
            e.starts_with(&format!("/etc/twofold/twofold.toml:{line}:")) && e.contains(words),
            "{text:?}: {e}"
        );
    }
}

#[test]
fn missing_default_file_means_defaults_but_missing_explicit_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.toml");
    assert!(matches!(
        load(Source::Explicit(&missing)),
        Err(ConfigError::Read { .. })
    ));
}
