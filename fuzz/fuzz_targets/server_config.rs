//! The server's config file loader (`crates/cli/src/server_config.rs`, compiled here from the
//! binary crate's source): any file contents give settings or an error, never a panic.
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
        let _ = args.resolve();
    });
});
