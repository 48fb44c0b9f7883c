//! `--threads N`: accepted connections are served by N single-threaded
//! workers, each with its own shard of every backend pool. Its own test
//! binary: the worker count is process-wide.

mod common;

use std::sync::Arc;

use common::*;
use rampart_lb::config::Config;
use rampart_lb::workers::{self, Workers};
use rampart_lb::Lb;

#[test]
fn connections_go_round_robin_to_workers_that_keep_their_own_pools() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let workers = Arc::new(Workers::start(3).expect("workers start"));
    assert_eq!((workers.len(), workers::count(), workers::index()), (3, 3, 0));
    rt.block_on(async {
        let b = Backend::start("b1").await;
        let toml = one_frontend("http", "round_robin", &[b.addr], "[frontend.health]\nenabled = false\n");
        let cfg = Config::parse(&toml, "test.toml").unwrap();
        let lb = Lb::start_with(cfg, Some(workers.clone())).await.expect("lb starts");
        let addr = lb.local_addr("web").unwrap();
        // One connection at a time: the first of each worker opens a backend
        // connection, which goes back to that worker's shard and is reused by
        // its later connections, never by another worker's.
        for _ in 0..9 {
            let mut c = Client::connect(addr).await.unwrap();
            for _ in 0..3 {
                assert_eq!(c.get("/").await.unwrap(), (200, "ok from b1\n".to_string()));
            }
        }
        let s = stats(&lb).await;
        assert_eq!(backend_stat(&s, b.addr)["requests"], 27, "{s}");
        assert_eq!(backend_stat(&s, b.addr)["connects"], 3, "one backend connection per worker: {s}");
        // L4 sessions on workers too.
        let echo = echo_server().await;
        let tcp = one_frontend("tcp", "round_robin", &[echo], "[frontend.health]\nenabled = false\n");
        let lb4 = Lb::start_with(Config::parse(&tcp, "test.toml").unwrap(), Some(workers.clone())).await.unwrap();
        for i in 0..4u8 {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(lb4.local_addr("web").unwrap()).await.unwrap();
            s.write_all(&[b'a' + i; 5]).await.unwrap();
            s.shutdown().await.unwrap();
            let mut out = Vec::new();
            tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await.unwrap().unwrap();
            assert_eq!(out, [b'a' + i; 5]);
        }
        lb.shutdown();
        lb4.shutdown();
    });
    workers.stop();
}
