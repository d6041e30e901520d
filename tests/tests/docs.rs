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

/// The text of a man page from the line `start` (excluded) to the next
/// section or subsection heading.
fn man_section<'a>(page: &'a str, start: &str) -> Option<&'a str> {
    let at = page.find(&format!("\n{start}\n"))? + start.len() + 2;
    let rest = &page[at..];
    let end = [rest.find("\n.SH "), rest.find("\n.SS ")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// The tags of the `.TP` items of a man page section: `.B word` lines.
fn tagged_words(section: &str) -> Vec<String> {
    let lines: Vec<&str> = section.lines().collect();
    lines
        .windows(2)
        .filter(|pair| pair[0] == ".TP")
        .filter_map(|pair| pair[1].strip_prefix(".B "))
        .map(str::to_string)
        .collect()
}

/// roff wants `\-` for a hyphen that must stay one (options, commands).
fn roff(text: &str) -> String {
    text.replace('-', "\\-")
}

#[test]
fn every_config_key_is_documented() {
    let (readme, man, sample) = (
        read("README.md"),
        read("packaging/man/twofold.toml.5"),
        read("packaging/twofold.toml"),
    );
    for key in twofoldd::config::KEYS {
        assert!(readme.contains(&format!("`{key}`")), "README lacks {key}");
        let (heading, leaf) = match key.split_once('.') {
            Some((table, leaf)) => (format!(".SS [{table}]"), leaf),
            None => (".SH KEYS".to_string(), *key),
        };
        let section = man_section(&man, &heading)
            .unwrap_or_else(|| panic!("twofold.toml(5) lacks {heading}"));
        assert!(
            tagged_words(section).iter().any(|w| w == leaf),
            "twofold.toml(5) lacks {key} under {heading}"
        );
        assert!(
            sample.contains(&format!("\n{leaf} = ")),
            "packaging/twofold.toml lacks {key}"
        );
    }
    // Nor does the page document a key the daemon does not know.
    let mut headings = vec![(".SH KEYS".to_string(), String::new())];
    for line in man.lines() {
        if let Some(table) = line.strip_prefix(".SS [").and_then(|t| t.strip_suffix(']')) {
            headings.push((line.to_string(), format!("{table}.")));
        }
    }
    assert!(headings.len() > 1);
    for (heading, prefix) in headings {
        for leaf in tagged_words(man_section(&man, &heading).unwrap()) {
            let key = format!("{prefix}{leaf}");
            assert!(
                twofoldd::config::KEYS.contains(&key.as_str()),
                "twofold.toml(5) documents {key}, which the daemon does not know"
            );
        }
    }
}

/// Every subcommand of `twofold` (as `admin status`), with its command.
fn twofold_commands() -> Vec<(String, clap::Command)> {
    fn walk(prefix: &str, command: &clap::Command, out: &mut Vec<(String, clap::Command)>) {
        for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
            let path = format!("{prefix}{}", sub.get_name());
            out.push((path.clone(), sub.clone()));
            walk(&format!("{path} "), sub, out);
        }
    }
    let mut out = Vec::new();
    walk(
        "",
        &<twofold_cli::args::Cli as clap::CommandFactory>::command(),
        &mut out,
    );
    out
}

#[test]
fn every_twofold_command_and_option_is_in_twofold_1() {
    let man = read("packaging/man/twofold.1");
    let readme = read("README.md");
    let commands = twofold_commands();
    assert!(commands.len() > 15, "{}", commands.len());
    for (path, command) in &commands {
        if command.has_subcommands() {
            continue;
        }
        let heading = format!(".SS twofold {}", roff(path));
        let section =
            man_section(&man, &heading).unwrap_or_else(|| panic!("twofold.1 lacks `{heading}`"));
        for arg in command.get_arguments() {
            if let Some(long) = arg.get_long() {
                if long == "help" {
                    continue;
                }
                assert!(
                    section.contains(&format!("\\-\\-{}", roff(long))),
                    "twofold.1: `twofold {path}` lacks --{long}"
                );
            } else if arg.is_positional() {
                let name = arg.get_id().as_str().to_lowercase();
                assert!(
                    section.contains(&format!(".I {name}"))
                        || section.contains(&format!(".RI [ {name} ]")),
                    "twofold.1: `twofold {path}` lacks its argument {name}"
                );
            }
        }
        for alias in command.get_visible_aliases() {
            assert!(
                section.contains(alias),
                "twofold.1: `twofold {path}` lacks its alias {alias}"
            );
        }
        let in_readme = match path.strip_prefix("admin ") {
            Some(sub) => readme.contains(&format!("| `{sub}")),
            None => readme.contains(&format!("`twofold {path}")),
        };
        assert!(in_readme, "README lacks `twofold {path}`");
    }
    // Nor does the page describe a command that does not exist.
    for line in man.lines() {
        if let Some(documented) = line.strip_prefix(".SS twofold ") {
            let documented = documented.replace("\\-", "-");
            assert!(
                commands.iter().any(|(path, _)| *path == documented),
                "twofold.1 documents `twofold {documented}`, which does not exist"
            );
        }
    }
}

#[test]
fn every_twofoldd_option_is_in_twofoldd_8() {
    let man = read("packaging/man/twofoldd.8");
    let help = Command::new(twofold_e2e::artifacts().twofoldd())
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    let options: Vec<&str> = help
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.trim_end_matches(','))
        .collect();
    assert!(options.len() >= 4, "{help}");
    let section = man_section(&man, ".SH OPTIONS").unwrap();
    for option in &options {
        assert!(section.contains(&roff(option)), "twofoldd.8 lacks {option}");
    }
    for word in section.split_whitespace() {
        if let Some(option) = word.strip_prefix("\\-\\-") {
            let option = format!("--{}", option.replace("\\-", "-"));
            assert!(
                options.contains(&option.as_str()),
                "twofoldd.8 documents {option}, which twofoldd does not know"
            );
        }
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
