//! A user's stored state: any enrollment file and any journal. The input is
//! the enrollment file's bytes, a 0xFF byte (never in UTF-8 text), then the
//! journal's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twofoldd::store::{RECORD_LEN, decode_state};

fuzz_target!(|input: &[u8]| {
    let (enrollment, journal) = match input.iter().position(|&b| b == 0xff) {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, &[][..]),
    };
    let Ok(enrollment) = std::str::from_utf8(enrollment) else {
        return; // FileStore::load reads the file as UTF-8 first.
    };
    if let Ok(loaded) = decode_state(enrollment, journal) {
        // Only whole records are counted; a torn tail is left out.
        assert!(loaded.journal_len as usize <= journal.len());
        assert_eq!(loaded.journal_len as usize % RECORD_LEN, 0);
    }
});
