//! User names are checked before they reach a path, a log line or NSS.

/// Longest user name accepted (Linux `LOGIN_NAME_MAX` is 256; useradd stops at 32;
/// directory services may use longer, qualified names).
pub const MAX_USER_LEN: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserNameError {
    Empty,
    TooLong,
    BadCharacter,
}

impl std::fmt::Display for UserNameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Empty => "empty user name",
            Self::TooLong => "user name too long",
            Self::BadCharacter => "user name has a character twofold does not accept",
        })
    }
}

impl std::error::Error for UserNameError {}

/// Accept the portable user name set plus `@` (SSSD qualified names) and a
/// trailing `$` (Samba machine accounts): letters, digits, `_`, `.`, `-`, `@`,
/// not starting with `-` or `.`, so a name can never be a path or an option.
pub fn validate(name: &str) -> Result<(), UserNameError> {
    let bytes = name.as_bytes();
    let Some(&first) = bytes.first() else {
        return Err(UserNameError::Empty);
    };
    if bytes.len() > MAX_USER_LEN {
        return Err(UserNameError::TooLong);
    }
    if !(first.is_ascii_alphanumeric() || first == b'_') {
        return Err(UserNameError::BadCharacter);
    }
    let (body, last) = bytes.split_at(bytes.len() - 1);
    let ok_char = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'@');
    if body.iter().all(ok_char) && (ok_char(&last[0]) || last[0] == b'$') {
        Ok(())
    } else {
        Err(UserNameError::BadCharacter)
    }
}

/// A user name made safe for one log line: anything outside printable ASCII
/// is shown as `\xNN`, and the length is capped.
pub fn loggable(name: &[u8]) -> String {
    let mut out = String::new();
    for &b in name.iter().take(MAX_USER_LEN) {
        if b == b'\\' {
            // Escaped too, so that typed text like `\x0a` cannot pass for an escape.
            out.push_str("\\\\");
        } else if b.is_ascii_graphic() {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    if name.len() > MAX_USER_LEN {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in [
            "alice",
            "bob-2",
            "_svc",
            "ftp.user",
            "a@example.com",
            "HOST$",
            "x",
        ] {
            assert_eq!(validate(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn refuses_odd_names() {
        assert_eq!(validate(""), Err(UserNameError::Empty));
        for name in [
            "..",
            ".hidden",
            "-rf",
            "a/b",
            "../etc/passwd",
            "a b",
            "a\nb",
            "é",
            "a$b",
            "a\0",
        ] {
            assert_eq!(validate(name), Err(UserNameError::BadCharacter), "{name:?}");
        }
        assert_eq!(
            validate(&"a".repeat(MAX_USER_LEN + 1)),
            Err(UserNameError::TooLong)
        );
    }

    #[test]
    fn loggable_escapes_control_characters() {
        assert_eq!(loggable(b"ev\nil user"), "ev\\x0ail\\x20user");
        assert!(loggable(&[b'a'; 200]).ends_with("..."));
        assert_eq!(loggable(b"a\\x0ab"), "a\\\\x0ab");
    }
}
