//! The balancer's config loader (`rampart_lb::config::Config::parse`): any text gives a config
//! or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = rampart_lb::config::Config::parse(text, "fuzz.toml");
    }
});
