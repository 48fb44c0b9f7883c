//! The server's config file loader (`crates/cli/src/server_config.rs`, compiled here from the
//! binary crate's source): any file contents give settings or an error, never a panic, and
//! settings that pass are safe to compute with at start (no overflowing timeouts).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../crates/cli/src/server_config.rs"]
mod server_config;

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static FILE: std::path::PathBuf = {
            let dir = std::env::temp_dir().join(format!("rampart-fuzz-config-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            dir.join("server.toml")
        };
    }
    FILE.with(|path| {
        std::fs::write(path, data).expect("write the config file");
        let args = server_config::ServerArgs { config: Some(path.clone()), ..Default::default() };
        if let Ok(s) = args.resolve() {
            // What a node computes from the settings at start and per request must not overflow.
            assert!(s.election_timeout_ms.checked_mul(4).is_some(), "election_timeout_ms {}", s.election_timeout_ms);
            assert!(s.election_timeout_ms >= s.heartbeat_interval_ms.saturating_mul(3));
            assert!(std::time::Instant::now().checked_add(s.request_timeout).is_some());
            assert!(s.snapshot_logs <= server_config::SNAPSHOT_LOGS_MAX);
        }
    });
});
