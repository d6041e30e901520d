//! Formatting shared by the commands: Unix times as UTC dates, counts in
//! words, and text from elsewhere made safe to print on a terminal.

use std::borrow::Cow;
use std::fmt::Write as _;

const SECS_PER_DAY: u64 = 86_400;

/// `YYYY-MM-DD HH:MM UTC`.
pub fn utc_minute(unix: u64) -> String {
    let (y, m, d) = civil_from_days(unix / SECS_PER_DAY);
    let secs = unix % SECS_PER_DAY;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

/// `YYYY-MM-DD` (UTC).
pub fn utc_date(unix: u64) -> String {
    let (y, m, d) = civil_from_days(unix / SECS_PER_DAY);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Year, month (1–12) and day (1–31) of a count of days since 1970-01-01,
/// in the proleptic Gregorian calendar (Howard Hinnant's `civil_from_days`,
/// unsigned since the count never precedes 1970).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01, so that a leap day ends its year.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097; // day of the 400-year era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the March year, 0..=365
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + yoe + u64::from(month <= 2);
    (year, month, day)
}

/// "1 day", "3 days".
pub fn count(n: u32, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Text that came from elsewhere (a host name, an account name), with
/// control and bidirectional-override characters shown as escapes, so it
/// cannot move the cursor, clear the screen or reorder what follows.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_unix_times_in_utc() {
        assert_eq!(utc_minute(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_minute(1_785_456_000), "2026-07-31 00:00 UTC");
        assert_eq!(utc_minute(1_709_164_800), "2024-02-29 00:00 UTC");
        assert_eq!(utc_minute(1_709_164_800 - 60), "2024-02-28 23:59 UTC");
        assert_eq!(
            utc_minute(1_709_164_800 + SECS_PER_DAY),
            "2024-03-01 00:00 UTC"
        );
        // The last minute of a day, of a year, and of a century year that is a leap year.
        assert_eq!(utc_minute(86_399), "1970-01-01 23:59 UTC");
        assert_eq!(utc_minute(1_735_689_599), "2024-12-31 23:59 UTC");
        assert_eq!(utc_minute(951_782_400), "2000-02-29 00:00 UTC");
        // 2100 is not a leap year.
        assert_eq!(utc_minute(4_107_456_000), "2100-02-28 00:00 UTC");
        assert_eq!(utc_minute(4_107_542_400), "2100-03-01 00:00 UTC");
        assert_eq!(utc_date(1_785_484_740), "2026-07-31");
    }

    #[test]
    fn agrees_with_a_day_by_day_count() {
        // (`is_multiple_of` would need Rust 1.87; the workspace supports 1.85.)
        let days_in = |y: u64, m: u64| match (m, y % 4, y % 100, y % 400) {
            (2, _, _, 0) => 29,
            (2, _, 0, _) => 28,
            (2, 0, _, _) => 29,
            (2, ..) => 28,
            (4 | 6 | 9 | 11, ..) => 30,
            _ => 31,
        };
        let (mut y, mut m, mut d) = (1970, 1, 1);
        for days in 0..200_000 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            d += 1;
            if d > days_in(y, m) {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn the_largest_time_does_not_overflow() {
        assert!(utc_minute(u64::MAX).ends_with(" UTC"));
    }

    #[test]
    fn counts_read_well() {
        assert_eq!(count(1, "day", "days"), "1 day");
        assert_eq!(count(0, "day", "days"), "0 days");
        assert_eq!(count(12, "day", "days"), "12 days");
    }

    #[test]
    fn escapes_what_would_control_the_terminal() {
        assert!(matches!(printable("host.example"), Cow::Borrowed(_)));
        assert_eq!(printable("dé@corp"), "dé@corp");
        assert_eq!(printable("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(printable("x\ny\u{202e}z"), "x\\u{a}y\\u{202e}z");
    }
}
