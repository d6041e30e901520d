//! The documentation stays true. The man pages are the reference: they are
//! well-formed, and each names every key, command and option the code knows,
//! and nothing else. `README.md` and `docs/` explain and link to them without
//! repeating them: their links lead somewhere, the README stays a front door,
//! and `docs/architecture.md` names every source file (and none that is gone).
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

/// Every key of the policy file: the top-level keys, then those of a rule
/// (`[default]` and each `[[rule]]`).
const POLICY_KEYS: &[&str] = &[
    "support",
    "unenrolled_require",
    "trusted_networks",
    "remember_device_secs",
    "mode",
    "schedule",
    "methods",
    "grace_days",
    "name",
    "groups",
    "services",
];

#[test]
fn every_policy_key_is_in_twofold_policy_5_and_no_other() {
    let (man, sample) = (
        read("packaging/man/twofold-policy.5"),
        read("packaging/policy.toml"),
    );
    let keys = man_section(&man, ".SH KEYS").expect("twofold-policy(5) lacks .SH KEYS");
    let tags = tagged_words(keys);
    for key in POLICY_KEYS {
        assert!(
            tags.iter().any(|t| t == key),
            "twofold-policy(5) lacks {key} under KEYS"
        );
        assert!(sample.contains(key), "packaging/policy.toml lacks {key}");
    }
    for table in ["[default]", "[[rule]]"] {
        assert!(
            keys.contains(&format!(".B {table}\n")),
            "twofold-policy(5) lacks {table} under KEYS"
        );
        assert!(
            sample.contains(table),
            "packaging/policy.toml lacks {table}"
        );
    }
    for tag in &tags {
        assert!(
            POLICY_KEYS.contains(&tag.as_str()),
            "twofold-policy(5) documents {tag}, which the policy does not know"
        );
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

/// The tags of the `.TP` items of a man page section: `.B word` lines, and
/// `.BR a ", " b` lines that tag several words at once.
fn tagged_words(section: &str) -> Vec<String> {
    let lines: Vec<&str> = section.lines().collect();
    lines
        .windows(2)
        .filter(|pair| pair[0] == ".TP")
        .flat_map(|pair| {
            if let Some(word) = pair[1].strip_prefix(".B ") {
                vec![word.to_string()]
            } else if let Some(words) = pair[1].strip_prefix(".BR ") {
                words
                    .split_whitespace()
                    .filter(|w| !w.contains('"'))
                    .map(str::to_string)
                    .collect()
            } else {
                Vec::new()
            }
        })
        .collect()
}

/// roff wants `\-` for a hyphen that must stay one (options, commands).
fn roff(text: &str) -> String {
    text.replace('-', "\\-")
}

#[test]
fn every_config_key_is_in_twofold_toml_5_and_no_other() {
    let (man, sample) = (
        read("packaging/man/twofold.toml.5"),
        read("packaging/twofold.toml"),
    );
    for key in twofoldd::config::KEYS {
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
fn every_module_option_is_in_pam_twofold_8_and_no_other() {
    let man = read("packaging/man/pam_twofold.8");
    for option in pam_twofold::args::OPTION_NAMES {
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

/// `README.md` and every Markdown file in `docs/`, as (path, text).
fn markdown_files() -> Vec<(String, String)> {
    let mut files = vec![("README.md".to_string(), read("README.md"))];
    let mut docs: Vec<_> = std::fs::read_dir(workspace_root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    for path in docs {
        let name = format!("docs/{}", path.file_name().unwrap().to_string_lossy());
        files.push((name.clone(), read(&name)));
    }
    files
}

/// The lines of a Markdown text outside fenced code blocks.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|line| {
            if line.starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// The anchor GitHub gives a heading: lower case, punctuation dropped,
/// spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    prose_lines(text)
        .iter()
        .filter(|line| line.starts_with('#'))
        .map(|line| anchor(line.trim_start_matches('#')))
        .collect()
}

#[test]
fn links_in_the_readme_and_docs_lead_somewhere() {
    let files = markdown_files();
    assert!(files.len() >= 6, "docs/ has {} files", files.len() - 1);
    let mut checked = 0;
    for (name, text) in &files {
        let dir = std::path::Path::new(name).parent().unwrap();
        for line in prose_lines(text) {
            for (at, _) in line.match_indices("](") {
                let target = line[at + 2..].split(')').next().unwrap_or_default();
                if target.starts_with("http") || target.starts_with("mailto:") {
                    continue;
                }
                let (path, fragment) = match target.split_once('#') {
                    Some((path, fragment)) => (path, Some(fragment)),
                    None => (target, None),
                };
                let file = if path.is_empty() {
                    std::path::PathBuf::from(name)
                } else {
                    dir.join(path)
                };
                let full = workspace_root().join(&file);
                assert!(full.exists(), "{name}: the link to {target} leads nowhere");
                if let Some(fragment) = fragment {
                    let text = std::fs::read_to_string(&full).unwrap();
                    assert!(
                        anchors(&text).iter().any(|a| a == fragment),
                        "{name}: {} has no heading for #{fragment}",
                        file.display()
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 20, "{checked} links");
}

/// Paths of Rust files (`daemon/src/rules.rs`) a text names.
fn rust_paths(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/')))
        .filter(|word| word.contains('/') && word.ends_with(".rs"))
        .map(str::to_string)
        .collect()
}

fn rust_files_under(dir: &str, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(workspace_root().join(dir)).unwrap() {
        let path = entry.unwrap().path();
        let name = format!("{dir}/{}", path.file_name().unwrap().to_string_lossy());
        if path.is_dir() {
            rust_files_under(&name, out);
        } else if name.ends_with(".rs") {
            out.push(name);
        }
    }
}

#[test]
fn the_architecture_map_names_every_source_file_and_no_other() {
    let map = read("docs/architecture.md");
    let named = rust_paths(&map);
    let mut files = Vec::new();
    for dir in ["protocol/src", "pam-module/src", "daemon/src", "cli/src"] {
        rust_files_under(dir, &mut files);
    }
    assert!(files.len() > 30, "{files:?}");
    for file in &files {
        assert!(
            named.contains(file),
            "docs/architecture.md does not place {file} on the map"
        );
    }
    // Nor does any page name a file that is gone.
    for (name, text) in markdown_files() {
        for path in rust_paths(&text) {
            assert!(
                workspace_root().join(&path).exists(),
                "{name} names {path}, which does not exist"
            );
        }
    }
}

#[test]
fn docs_testing_md_describes_every_test_file() {
    let testing = read("docs/testing.md");
    let mut files = Vec::new();
    rust_files_under("tests/tests", &mut files);
    assert!(files.len() > 5, "{files:?}");
    for file in files {
        assert!(
            testing.contains(&format!("`{file}`")),
            "docs/testing.md does not describe {file}"
        );
    }
}

/// The README is the front door: what twofold is, the two commands, how to
/// install and turn it on, a policy, and links. The rest lives in `docs/`
/// and the man pages.
#[test]
fn the_readme_stays_a_front_door() {
    let lines = read("README.md").lines().count();
    assert!(
        lines <= 350,
        "README.md has {lines} lines: move the detail to docs/ or a man page"
    );
}
