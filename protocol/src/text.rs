//! Wording shared by the daemon's messages and the command's output.

/// "5 seconds", "3 minutes", "2 hours".
pub fn human_duration(secs: u64) -> String {
    let (n, unit) = match secs {
        0..=119 => (secs.max(1), "second"),
        120..=7199 => (secs.div_ceil(60), "minute"),
        _ => (secs.div_ceil(3600), "hour"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// A device clock's offset in words: "on time", "about 30 seconds ahead",
/// "about 1 minute behind"; `None`: not known yet.
pub fn clock_words(drift_secs: Option<i64>) -> String {
    match drift_secs {
        None => "clock not checked yet (no code accepted since it was recorded)".into(),
        Some(0) => "clock on time".into(),
        Some(s) => format!(
            "clock about {} {} (at its last code)",
            human_duration(s.unsigned_abs()),
            if s > 0 { "ahead" } else { "behind" }
        ),
    }
}

/// The daemon's QR drawing (light modules drawn, dark ones left blank) in
/// explicit colours, for a terminal that shows them (`twofold setup`): white
/// drawn on black, line by line, so it scans the same on light and dark
/// backgrounds (the quiet zone is light, like the modules it surrounds).
/// Not for the login conversation: SSH clients show escapes as text there.
pub fn qr_in_colour(drawing: &str) -> String {
    const WHITE_ON_BLACK: &str = "\x1b[97;40m";
    const RESET: &str = "\x1b[0m";
    let mut out = String::with_capacity(drawing.len() + drawing.lines().count() * 12);
    for line in drawing.lines() {
        out.push_str(WHITE_ON_BLACK);
        out.push_str(line);
        out.push_str(RESET);
        out.push('\n');
    }
    out
}

/// The daemon's Unicode QR drawing the other way round (dark modules drawn,
/// light ones blank), for a light background where colours cannot be used.
pub fn qr_inverted(drawing: &str) -> String {
    drawing
        .chars()
        .map(|c| match c {
            ' ' => '\u{2588}',
            '\u{2588}' => ' ',
            '\u{2580}' => '\u{2584}',
            '\u{2584}' => '\u{2580}',
            other => other,
        })
        .collect()
}

/// A base32 key in blocks of four, easier to copy by hand.
pub fn group_key(key: &str) -> zeroize::Zeroizing<String> {
    let mut grouped = zeroize::Zeroizing::new(String::with_capacity(key.len() + key.len() / 4));
    for (i, c) in key.chars().filter(|c| !c.is_whitespace()).enumerate() {
        if i > 0 && i % 4 == 0 {
            grouped.push(' ');
        }
        grouped.push(c);
    }
    grouped
}

/// Whether the locale named by the usual variables (`LC_ALL`, then
/// `LC_CTYPE`, then `LANG`; the first one set wins) encodes UTF-8. `None`
/// when none is set: the terminal's character set is unknown.
pub fn locale_is_utf8(var: impl Fn(&str) -> Option<String>) -> Option<bool> {
    ["LC_ALL", "LC_CTYPE", "LANG"]
        .iter()
        .filter_map(|name| var(name).filter(|v| !v.is_empty()))
        .next()
        .map(|locale| {
            let codeset = locale.split_once('.').map_or("", |(_, c)| c);
            let codeset = codeset.split('@').next().unwrap_or("").to_ascii_lowercase();
            // C.UTF-8 and en_US.UTF-8 yes; C, POSIX, en_US.ISO-8859-1 no.
            codeset == "utf-8" || codeset == "utf8"
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_the_key_in_fours() {
        assert_eq!(
            group_key("JBSWY3DPEHPK3PXP").as_str(),
            "JBSW Y3DP EHPK 3PXP"
        );
        assert_eq!(group_key("ABCDEF").as_str(), "ABCD EF");
        assert_eq!(group_key("").as_str(), "");
    }

    #[test]
    fn utf8_locales_are_told_apart() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(locale_is_utf8(env(&[])), None);
        assert_eq!(locale_is_utf8(env(&[("LANG", "")])), None);
        assert_eq!(locale_is_utf8(env(&[("LANG", "en_US.UTF-8")])), Some(true));
        assert_eq!(locale_is_utf8(env(&[("LANG", "C.utf8")])), Some(true));
        assert_eq!(
            locale_is_utf8(env(&[("LANG", "de_DE.UTF-8@euro")])),
            Some(true)
        );
        assert_eq!(locale_is_utf8(env(&[("LANG", "C")])), Some(false));
        assert_eq!(locale_is_utf8(env(&[("LANG", "POSIX")])), Some(false));
        assert_eq!(
            locale_is_utf8(env(&[("LANG", "en_US.ISO-8859-1")])),
            Some(false)
        );
        // LC_ALL overrides LC_CTYPE, which overrides LANG.
        assert_eq!(
            locale_is_utf8(env(&[("LANG", "en_US.UTF-8"), ("LC_ALL", "C")])),
            Some(false)
        );
        assert_eq!(
            locale_is_utf8(env(&[("LANG", "C"), ("LC_CTYPE", "C.UTF-8")])),
            Some(true)
        );
    }

    #[test]
    fn human_durations_read_well() {
        assert_eq!(human_duration(0), "1 second");
        assert_eq!(human_duration(30), "30 seconds");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(1800), "30 minutes");
        assert_eq!(human_duration(86_400), "24 hours");
    }
}
