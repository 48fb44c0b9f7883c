//! Configuration reloads: new requests use the new configuration, in-flight
//! ones finish on the old, a broken file is refused and the old one kept.

mod common;

use common::*;
use rampart_lb::config::Config;
use rampart_lb::Lb;

fn config_text(backend: std::net::SocketAddr, extra_frontend: Option<std::net::SocketAddr>) -> String {
    let mut s = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[frontend]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\n\
         [frontend.health]\nenabled = false\n[[frontend.backend]]\naddr = \"{backend}\"\n"
    );
    if let Some(b) = extra_frontend {
        s.push_str(&format!(
            "[[frontend]]\nname = \"api\"\nlisten = \"127.0.0.1:0\"\nalgorithm = \"p2c\"\n\
             [frontend.health]\nenabled = false\n[[frontend.backend]]\naddr = \"{b}\"\n"
        ));
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_good_and_broken() {
    let b1 = Backend::start("b1").await;
    let b2 = Backend::start("b2").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, config_text(b1.addr, None)).unwrap();
    let lb = Lb::start(Config::load(&path).unwrap()).await.unwrap();
    let addr = lb.local_addr("web").unwrap();
    let mut keep = Client::connect(addr).await.unwrap();
    assert_eq!(keep.get("/").await.unwrap().1, "ok from b1\n");

    // A slow request is in flight on the old configuration during the reload.
    let slow = tokio::spawn(async move { get(addr, "/slow/1500").await });
    wait_until("slow request reached b1", || async { b1.hits() == 2 }).await;

    std::fs::write(&path, config_text(b2.addr, Some(b1.addr))).unwrap();
    lb.reload_from_source().await.expect("good reload");
    assert_eq!(lb.local_addr("web"), Some(addr), "listener kept across reload");
    assert_eq!(get(addr, "/").await.unwrap().1, "ok from b2\n");
    // An existing keep-alive connection also moves to the new backends.
    assert_eq!(keep.get("/").await.unwrap().1, "ok from b2\n");
    // The new frontend listens.
    assert_eq!(get(lb.local_addr("api").unwrap(), "/").await.unwrap().1, "ok from b1\n");
    // The in-flight request finished where it started.
    assert_eq!(slow.await.unwrap().unwrap(), (200, "ok from b1\n".to_string()));

    // A broken file is refused with file, field and reason; the old config stays.
    let generation = lb.generation();
    std::fs::write(&path, config_text(b1.addr, None).replace("addr = ", "addr = \"nope\"\n#")).unwrap();
    let err = lb.reload_from_source().await.unwrap_err().to_string();
    assert!(err.contains("lb.toml") && err.contains("frontend[0].backend[0].addr"), "{err}");
    assert_eq!(lb.generation(), generation);
    assert_eq!(get(addr, "/").await.unwrap().1, "ok from b2\n");

    // Through the admin API: broken is a 400, then a fixed file reloads and
    // drops the `api` frontend.
    let admin = lb.admin_addr().unwrap();
    let mut a = Client::connect(admin).await.unwrap();
    let (status, body) = a.request("POST", "/reload", "").await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("reload_refused"));
    std::fs::write(&path, config_text(b1.addr, None)).unwrap();
    assert_eq!(a.request("POST", "/reload", "").await.unwrap().0, 200);
    assert_eq!(get(addr, "/").await.unwrap().1, "ok from b1\n");
    assert!(lb.local_addr("api").is_none());

    // `rampart lb reload --admin ADDR` does the same from the command line.
    std::fs::write(&path, config_text(b2.addr, None)).unwrap();
    let cmd = |admin: std::net::SocketAddr| {
        tokio::task::spawn_blocking(move || {
            rampart_lb::run::send_reload(&rampart_lb::run::ReloadTarget::Admin(admin.to_string()))
        })
    };
    cmd(admin).await.unwrap().expect("reload --admin");
    assert_eq!(get(addr, "/").await.unwrap().1, "ok from b2\n");
    std::fs::write(&path, "not toml [").unwrap();
    let err = cmd(admin).await.unwrap().unwrap_err().to_string();
    assert!(err.contains("lb.toml"), "{err}");
    assert_eq!(get(addr, "/").await.unwrap().1, "ok from b2\n");
}
