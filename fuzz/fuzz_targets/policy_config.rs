//! The policy file and the daemon's configuration file: any text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|text: &str| {
    if let Ok(policy) = twofoldd::policy::parse(text, Path::new("fuzz-policy.toml")) {
        // What parsed can be summarized (what check-config and reload print).
        let _ = policy.summary();
    }
    let _ = twofoldd::config::parse(text, Path::new("fuzz-twofold.toml"));
});
