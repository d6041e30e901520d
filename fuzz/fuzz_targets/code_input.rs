//! What the module accepts from the PAM conversation: any bytes at all.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twofold_protocol::code::{Code, CodeError, MAX_INPUT_LEN, parse};

fuzz_target!(|input: &[u8]| {
    match parse(input) {
        // A TOTP code is 6 to 8 ASCII digits, whatever was typed around it.
        Ok(Code::Totp(code)) => {
            assert!((6..=8).contains(&code.len()), "{:?}", code.as_str());
            assert!(code.bytes().all(|b| b.is_ascii_digit()));
        }
        // A backup code is 10 lowercase Crockford base32 characters.
        Ok(Code::Backup(code)) => {
            assert_eq!(code.len(), 10);
            assert!(
                code.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            );
        }
        Err(CodeError::TooLong) => assert!(input.len() > MAX_INPUT_LEN),
        Err(_) => {}
    }
});
