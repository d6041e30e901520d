//! The documentation stays true: man pages are well-formed, and every policy
//! and configuration key the parsers accept is documented.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use twofold_e2e::workspace_root;

fn read(path: &str) -> String {
    std::fs::read_to_string(workspace_root().join(path)).unwrap()
}

#[test]
fn man_pages_pass_mandoc_lint() {
    let dir = workspace_root().join("packaging/man");
    let pages: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!pages.is_empty());
    for page in pages {
        let out = Command::new("mandoc")
            .args(["-T", "lint", "-W", "warning"])
            .arg(&page)
            .output()
            .expect("mandoc (apt-get install mandoc)");
        assert!(
            out.status.success() && out.stdout.is_empty(),
            "{}: {}{}",
            page.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_policy_key_is_documented() {
    let keys = [
        "support",
        "unenrolled_require",
        "trusted_networks",
        "remember_device_secs",
        "[default]",
        "[[rule]]",
        "mode",
        "schedule",
        "grace_days",
        "name",
        "groups",
        "services",
    ];
    let (readme, man, sample) = (
        read("README.md"),
        read("packaging/man/twofold-policy.5"),
        read("packaging/policy.toml"),
    );
    for key in keys {
        let plain = key.trim_matches(['[', ']']);
        let documented = [
            format!("`{plain}"),
            format!("`rule.{plain}"),
            format!("`default.{plain}"),
            format!("`{key}"),
        ]
        .iter()
        .any(|form| readme.contains(form.as_str()));
        assert!(documented, "README lacks {key}");
        assert!(man.contains(plain), "twofold-policy(5) lacks {key}");
        assert!(sample.contains(plain), "packaging/policy.toml lacks {key}");
    }
}

#[test]
fn every_config_key_is_documented() {
    let readme = read("README.md");
    for key in [
        "state_dir",
        "admin_group",
        "policy_file",
        "totp.issuer",
        "totp.digits",
        "totp.period",
        "totp.window",
        "throttle.free_failures",
        "throttle.base_delay_secs",
        "throttle.max_delay_secs",
        "throttle.lockout_after",
        "throttle.lockout_secs",
        "throttle.account_burst",
        "throttle.account_interval_secs",
        "enrollment.backup_codes",
        "enrollment.offer_timeout_secs",
    ] {
        assert!(readme.contains(&format!("`{key}`")), "README lacks {key}");
    }
}

#[test]
fn every_module_option_is_documented_and_no_other() {
    let (readme, man) = (read("README.md"), read("packaging/man/pam_twofold.8"));
    for option in pam_twofold::args::OPTION_NAMES {
        assert!(
            readme.contains(&format!("`{option}`")),
            "README lacks {option}"
        );
        assert!(
            man.contains(&format!(".B {option}\n")),
            "pam_twofold.8 lacks {option}"
        );
    }
    // The man page's OPTIONS section lists nothing the module does not know.
    let options = man
        .split(".SH OPTIONS")
        .nth(1)
        .and_then(|rest| rest.split("\n.SH ").next())
        .unwrap();
    let lines: Vec<&str> = options.lines().collect();
    for pair in lines.windows(2) {
        if pair[0] == ".TP" {
            let option = pair[1].trim_start_matches(".B ");
            assert!(
                pam_twofold::args::OPTION_NAMES.contains(&option),
                "pam_twofold.8 documents {option}, which the module does not know"
            );
        }
    }
}
