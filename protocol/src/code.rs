//! What counts as a code. The module checks input with this before it
//! reaches the bus and the daemon checks it again: malformed input is refused
//! without being verified, and the length is bounded before anything else.

use zeroize::Zeroizing;

/// Longest input looked at, in bytes; anything longer is refused unread.
pub const MAX_INPUT_LEN: usize = 64;
/// Digits in a TOTP code the parser accepts (the daemon checks its own setting).
pub const TOTP_DIGITS: std::ops::RangeInclusive<usize> = 6..=8;
/// Characters in a backup code, without separators.
pub const BACKUP_CODE_LEN: usize = 10;
/// Backup code alphabet: Crockford base32 in lower case (no i, l, o, u).
pub const BACKUP_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeError {
    Empty,
    TooLong,
    NotUtf8,
    Malformed,
}

impl CodeError {
    /// A sentence for the user, saying what to type instead.
    pub fn user_message(self) -> &'static str {
        match self {
            Self::Empty => {
                "No code was entered. Type the 6-digit code from your authenticator app."
            }
            Self::TooLong => {
                "That input is too long to be a code. Type the 6-digit code from your authenticator app."
            }
            Self::NotUtf8 | Self::Malformed => {
                "That is not a code. Type the 6-digit code from your authenticator app, or a backup code (xxxxx-xxxxx)."
            }
        }
    }
}

impl std::fmt::Display for CodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Empty => "empty code",
            Self::TooLong => "code input too long",
            Self::NotUtf8 => "code input is not UTF-8",
            Self::Malformed => "code input is neither digits nor a backup code",
        })
    }
}

impl std::error::Error for CodeError {}

/// A well-formed code, normalized (separators removed, lower case).
#[derive(PartialEq, Eq)]
pub enum Code {
    Totp(Zeroizing<String>),
    Backup(Zeroizing<String>),
}

impl Code {
    /// The normalized text, as sent to the daemon.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Totp(s) | Self::Backup(s) => s,
        }
    }
}

impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Totp(_) => "Code::Totp(***)",
            Self::Backup(_) => "Code::Backup(***)",
        })
    }
}

/// A backup code as people see it: `abcde-fghjk`.
pub fn display_backup(code: &str) -> Zeroizing<String> {
    Zeroizing::new(match code.split_at_checked(code.len() / 2) {
        Some((a, b)) => format!("{a}-{b}"),
        None => code.to_owned(),
    })
}

/// Parse what the user typed. Spaces and dashes are separators ("123 456",
/// "abcde-fghij"); case is ignored.
pub fn parse(input: &[u8]) -> Result<Code, CodeError> {
    if input.len() > MAX_INPUT_LEN {
        return Err(CodeError::TooLong);
    }
    let text = std::str::from_utf8(input).map_err(|_| CodeError::NotUtf8)?;
    let mut normalized = Zeroizing::new(String::with_capacity(text.len()));
    for c in text.trim().chars() {
        match c {
            ' ' | '-' => {}
            c if c.is_ascii_alphanumeric() => normalized.push(c.to_ascii_lowercase()),
            _ => return Err(CodeError::Malformed),
        }
    }
    if normalized.is_empty() {
        return Err(CodeError::Empty);
    }
    let bytes = normalized.as_bytes();
    if TOTP_DIGITS.contains(&bytes.len()) && bytes.iter().all(u8::is_ascii_digit) {
        return Ok(Code::Totp(normalized));
    }
    if bytes.len() == BACKUP_CODE_LEN && bytes.iter().all(|b| BACKUP_ALPHABET.contains(b)) {
        return Ok(Code::Backup(normalized));
    }
    Err(CodeError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_totp_codes_with_separators() {
        assert_eq!(parse(b"123456").unwrap().as_str(), "123456");
        assert_eq!(parse(b" 123 456 ").unwrap().as_str(), "123456");
        assert!(matches!(parse(b"12345678").unwrap(), Code::Totp(_)));
    }

    #[test]
    fn accepts_backup_codes_in_any_case() {
        let code = parse(b"ABCDE-fghjk").unwrap();
        assert!(matches!(code, Code::Backup(_)));
        assert_eq!(code.as_str(), "abcdefghjk");
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(parse(b""), Err(CodeError::Empty));
        assert_eq!(parse(b"   "), Err(CodeError::Empty));
        assert_eq!(parse(b"- -"), Err(CodeError::Empty));
        assert_eq!(parse(b"12345"), Err(CodeError::Malformed));
        assert_eq!(parse(b"123456789"), Err(CodeError::Malformed));
        assert_eq!(parse(b"12a456"), Err(CodeError::Malformed));
        assert_eq!(
            parse(b"123456\n"),
            Ok(Code::Totp(Zeroizing::new("123456".into())))
        );
        assert_eq!(parse(b"12\x003456"), Err(CodeError::Malformed));
        assert_eq!(parse(b"\xff\xfe123456"), Err(CodeError::NotUtf8));
        assert_eq!(parse("１２３４５６".as_bytes()), Err(CodeError::Malformed));
        assert_eq!(parse(b"abcdefghil"), Err(CodeError::Malformed)); // 'i', 'l' not in the alphabet
        assert_eq!(parse(&[b'1'; MAX_INPUT_LEN + 1]), Err(CodeError::TooLong));
        assert_eq!(parse(&[b'1'; 100_000]), Err(CodeError::TooLong));
    }

    #[test]
    fn backup_codes_are_shown_split_in_the_middle_and_parse_back() {
        assert_eq!(display_backup("abcdefghjk").as_str(), "abcde-fghjk");
        assert_eq!(
            parse(display_backup("0123456789").as_bytes())
                .unwrap()
                .as_str(),
            "0123456789"
        );
        assert_eq!(display_backup("éa").as_str(), "éa"); // never splits a character
    }

    #[test]
    fn debug_hides_the_code() {
        assert_eq!(
            format!("{:?}", parse(b"123456").unwrap()),
            "Code::Totp(***)"
        );
    }
}
