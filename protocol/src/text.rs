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
    fn human_durations_read_well() {
        assert_eq!(human_duration(0), "1 second");
        assert_eq!(human_duration(30), "30 seconds");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(1800), "30 minutes");
        assert_eq!(human_duration(86_400), "24 hours");
    }
}
