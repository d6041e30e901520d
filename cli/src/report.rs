//! `twofold admin report`: every account's enrollment and rule, as an
//! aligned table for people or as JSON for scripts.

use std::fmt::Write as _;

use twofold_protocol::{Mode, ReportRow};

use crate::show;
use crate::status::json_string;

const HEADERS: [&str; 9] = [
    "USER",
    "ENROLLED",
    "METHOD",
    "BACKUP",
    "LAST LOGIN",
    "LAST HOST",
    "RULE",
    "MODE",
    "ENFORCED",
];

/// Spaces between two columns.
const GAP: usize = 2;

const OVERRIDE_NOTE: &str = "* set for this user by an administrator \
                             (`twofold admin clear USER` returns them to the policy)";

const LOW_NOTE: &str =
    "low: few backup codes left; the user runs `twofold backup-codes` for a new set";

const CEILING_NOTE: &str = "! too many wrong codes from several places (the account-wide ceiling): \
                            only backup codes are checked from new addresses; \
                            `twofold admin status USER` tells more, `twofold admin unlock USER` clears it";

/// The table, a note on `*` when an override shows, and a summary line.
pub fn table(rows: &[ReportRow]) -> String {
    let mut lines: Vec<[String; 9]> = Vec::with_capacity(rows.len() + 1);
    lines.push(HEADERS.map(String::from));
    lines.extend(rows.iter().map(cells));
    let mut widths = [0; 9];
    for line in &lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for line in &lines {
        let mut out = String::new();
        for (cell, width) in line.iter().zip(widths) {
            let pad = width + GAP - cell.chars().count();
            let _ = write!(out, "{cell}{:pad$}", "");
        }
        text.push_str(out.trim_end());
        text.push('\n');
    }
    let overrides = rows.iter().any(|r| !r.override_mode.is_empty());
    let ceilings = rows.iter().any(|r| r.ceiling_reached_for_secs > 0);
    let low = rows.iter().any(|r| r.enrolled && r.low_backup_codes);
    if overrides || ceilings || low {
        text.push('\n');
    }
    if low {
        text.push_str(LOW_NOTE);
        text.push('\n');
    }
    if overrides {
        text.push_str(OVERRIDE_NOTE);
        text.push('\n');
    }
    if ceilings {
        text.push_str(CEILING_NOTE);
        text.push('\n');
    }
    text.push_str(&summary(rows));
    text
}

fn cells(r: &ReportRow) -> [String; 9] {
    let mut mode = or_dash(&r.mode);
    if !r.override_mode.is_empty() {
        mode.push('*');
    }
    let mut user = show::printable(&r.user).into_owned();
    if r.ceiling_reached_for_secs > 0 {
        user.push('!');
    }
    let enrolled = match (r.enrolled, r.alias_of.as_str()) {
        (_, "") => (if r.enrolled { "yes" } else { "no" }).to_string(),
        // The alias's login is asked for that account's code.
        (true, of) => format!("yes, as {}", show::printable(of)),
        (false, of) => format!("no, as {}", show::printable(of)),
    };
    [
        user,
        enrolled,
        or_dash(&r.method),
        if r.enrolled && r.low_backup_codes {
            format!("{} low", r.backup_codes_left)
        } else if r.enrolled {
            r.backup_codes_left.to_string()
        } else {
            "-".into()
        },
        match r.last_login {
            0 => "never".into(),
            t => show::utc_date(t),
        },
        // Empty: never, or a daemon that does not say.
        or_dash(&r.last_host),
        or_dash(&r.rule),
        mode,
        match (r.enforcement_date.as_str(), r.days_left) {
            ("", _) => "-".into(),
            (date, 0) => show::printable(date).into_owned(),
            (date, n) => format!(
                "{} ({})",
                show::printable(date),
                show::count(n, "day", "days")
            ),
        },
    ]
}

fn or_dash(value: &str) -> String {
    if value.is_empty() {
        "-".into()
    } else {
        show::printable(value).into_owned()
    }
}

/// "3 users, 1 enrolled, 2 not enrolled (1 of them under require)", with
/// ", and 1 alias" when some names are second names of an account (not
/// counted as users: they share its enrollment).
pub fn summary(rows: &[ReportRow]) -> String {
    let accounts = || rows.iter().filter(|r| r.alias_of.is_empty());
    let enrolled = accounts().filter(|r| r.enrolled).count();
    let required = accounts()
        .filter(|r| !r.enrolled && Mode::parse(&r.mode) == Some(Mode::Require))
        .count();
    let users = accounts().count();
    let aliases = rows.len() - users;
    let mut text = format!(
        "{users} user{}, {enrolled} enrolled, {} not enrolled ({required} of them under require)",
        if users == 1 { "" } else { "s" },
        users - enrolled
    );
    if aliases > 0 {
        let _ = write!(
            text,
            ", and {}",
            show::count(
                u32::try_from(aliases).unwrap_or(u32::MAX),
                "alias",
                "aliases"
            )
        );
    }
    text
}

/// A JSON array, one object a line, with every field of every row.
pub fn json(rows: &[ReportRow]) -> String {
    if rows.is_empty() {
        return "[]".into();
    }
    let objects: Vec<String> = rows.iter().map(row_json).collect();
    format!("[\n{}\n]", objects.join(",\n"))
}

fn row_json(r: &ReportRow) -> String {
    format!(
        "{{\"user\":{},\"uid\":{},\"enrolled\":{},\"method\":{},\"backup_codes_left\":{},\
         \"low_backup_codes\":{},\"last_login\":{},\"rule\":{},\"mode\":{},\"enforcement_date\":{},\"days_left\":{},\
         \"override_mode\":{},\"ceiling_reached_for_secs\":{},\"alias_of\":{},\"last_host\":{}}}",
        json_string(&r.user),
        r.uid,
        r.enrolled,
        json_string(&r.method),
        r.backup_codes_left,
        r.low_backup_codes,
        r.last_login,
        json_string(&r.rule),
        json_string(&r.mode),
        json_string(&r.enforcement_date),
        r.days_left,
        json_string(&r.override_mode),
        r.ceiling_reached_for_secs,
        json_string(&r.alias_of),
        json_string(&r.last_host)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(user: &str, enrolled: bool, mode: &str) -> ReportRow {
        ReportRow {
            user: user.into(),
            uid: 1000,
            enrolled,
            method: if enrolled {
                "totp".into()
            } else {
                String::new()
            },
            backup_codes_left: if enrolled { 8 } else { 0 },
            low_backup_codes: false,
            last_login: 0,
            rule: "default".into(),
            mode: mode.into(),
            enforcement_date: String::new(),
            days_left: 0,
            override_mode: String::new(),
            ceiling_reached_for_secs: 0,
            alias_of: String::new(),
            last_host: String::new(),
        }
    }

    fn rows() -> Vec<ReportRow> {
        vec![
            ReportRow {
                last_login: 1_785_484_740,
                last_host: "web-03".into(),
                ..row("alice", true, "require")
            },
            ReportRow {
                uid: 1001,
                rule: "staff".into(),
                enforcement_date: "2026-09-01".into(),
                days_left: 32,
                ..row("bob", false, "recommend")
            },
            ReportRow {
                uid: 1002,
                override_mode: "exempt".into(),
                ..row("carol.long-name", false, "exempt")
            },
            ReportRow {
                uid: 1003,
                rule: "staff".into(),
                enforcement_date: "2026-07-01".into(),
                ..row("dave", false, "require")
            },
        ]
    }

    #[test]
    fn aligns_the_table_and_sums_up() {
        assert_eq!(
            table(&rows()),
            "\
USER             ENROLLED  METHOD  BACKUP  LAST LOGIN  LAST HOST  RULE     MODE       ENFORCED
alice            yes       totp    8       2026-07-31  web-03     default  require    -
bob              no        -       -       never       -          staff    recommend  2026-09-01 (32 days)
carol.long-name  no        -       -       never       -          default  exempt*    -
dave             no        -       -       never       -          staff    require    2026-07-01

* set for this user by an administrator (`twofold admin clear USER` returns them to the policy)
4 users, 1 enrolled, 3 not enrolled (1 of them under require)"
        );
    }

    #[test]
    fn every_line_starts_its_columns_at_the_same_place() {
        let text = table(&rows());
        let lines: Vec<&str> = text.lines().take(5).collect();
        let starts = |line: &str| -> Vec<usize> {
            let chars: Vec<char> = line.chars().collect();
            (2..chars.len())
                .filter(|&i| chars[i] != ' ' && chars[i - 1] == ' ' && chars[i - 2] == ' ')
                .collect()
        };
        // The header's columns (LAST LOGIN and LAST HOST have one space inside).
        let header = starts(lines[0]);
        assert_eq!(header.len(), 8, "{header:?}");
        for line in &lines[1..] {
            for start in starts(line) {
                assert!(header.contains(&start), "{line:?} at {start}");
            }
        }
    }

    #[test]
    fn no_override_no_note() {
        let text = table(&[row("alice", true, "optional")]);
        assert!(!text.contains('*'), "{text}");
        assert!(text.ends_with("\n1 user, 1 enrolled, 0 not enrolled (0 of them under require)"));
        assert_eq!(
            table(&[]),
            "USER  ENROLLED  METHOD  BACKUP  LAST LOGIN  LAST HOST  RULE  MODE  ENFORCED\n\
             0 users, 0 enrolled, 0 not enrolled (0 of them under require)"
        );
    }

    #[test]
    fn aliases_show_as_such_and_a_reached_ceiling_stands_out() {
        let alice = ReportRow {
            ceiling_reached_for_secs: 600,
            ..row("alice", true, "require")
        };
        let alias = ReportRow {
            user: "alice2".into(),
            alias_of: "alice".into(),
            ..alice.clone()
        };
        let text = table(&[alice, alias, row("bob", false, "optional")]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("alice!   yes "), "{text}");
        assert!(lines[2].starts_with("alice2!  yes, as alice "), "{text}");
        assert!(
            lines[5].starts_with("! too many wrong codes from several places"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "2 users, 1 enrolled, 1 not enrolled (0 of them under require), and 1 alias"
            ),
            "{text}"
        );
    }

    #[test]
    fn odd_characters_cannot_break_the_table() {
        let text = table(&[
            row("ev\x1bil", true, "optional"),
            row("dé", true, "optional"),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("ev\\u{1b}il  yes"), "{text}");
        assert!(lines[2].starts_with("dé          yes"), "{text}");
    }

    #[test]
    fn writes_every_field_as_json() {
        let mut odd = row("we\"ird\\name", false, "require");
        odd.rule = "line\nbreak".into();
        odd.override_mode = "require".into();
        assert_eq!(
            json(&[rows().remove(0), odd]),
            "[\n\
             {\"user\":\"alice\",\"uid\":1000,\"enrolled\":true,\"method\":\"totp\",\
             \"backup_codes_left\":8,\"low_backup_codes\":false,\"last_login\":1785484740,\"rule\":\"default\",\
             \"mode\":\"require\",\"enforcement_date\":\"\",\"days_left\":0,\"override_mode\":\"\",\
             \"ceiling_reached_for_secs\":0,\"alias_of\":\"\",\"last_host\":\"web-03\"},\n\
             {\"user\":\"we\\\"ird\\\\name\",\"uid\":1000,\"enrolled\":false,\"method\":\"\",\
             \"backup_codes_left\":0,\"low_backup_codes\":false,\"last_login\":0,\"rule\":\"line\\nbreak\",\
             \"mode\":\"require\",\"enforcement_date\":\"\",\"days_left\":0,\"override_mode\":\"require\",\
             \"ceiling_reached_for_secs\":0,\"alias_of\":\"\",\"last_host\":\"\"}\n\
             ]"
        );
        assert_eq!(json(&[]), "[]");
    }
}
