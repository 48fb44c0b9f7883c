//! TLS on frontends (HTTP and TCP, optionally mutual) and to backends
//! (checked against a CA and a name, optionally with a client certificate),
//! with certificates made by rcgen for each test.

mod common;

use std::path::Path;

use common::tls::{self as t, Ca, Leaf, TlsBackend};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HC_OFF: &str = "[frontend.health]\nenabled = false\n";

/// `[frontend.tls]` with `leaf` written into `dir`, and a client CA if given.
fn frontend_tls(dir: &Path, leaf: &Leaf, client_ca: Option<&Ca>) -> String {
    let cert = t::write(dir, "fe-cert.pem", &leaf.cert);
    let key = t::write(dir, "fe-key.pem", &leaf.key);
    let mut s = format!("[frontend.tls]\ncert = {:?}\nkey = {:?}\n", cert, key);
    if let Some(ca) = client_ca {
        s.push_str(&format!("client_ca = {:?}\n", t::write(dir, "client-ca.pem", &ca.pem())));
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_frontend_serves_keep_alive_and_says_https_to_backends() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test ca");
    let b = Backend::start("b1").await;
    let extra = format!("{HC_OFF}{}", frontend_tls(dir.path(), &ca.server(&["localhost"]), None));
    let lb = start_lb(&one_frontend("http", "round_robin", &[b.addr], &extra)).await;
    let addr = lb.local_addr("web").unwrap();
    let cfg = t::client_config(&ca.pem(), None);
    let mut c = t::Client::connect(addr, &cfg).await.unwrap();
    for _ in 0..3 {
        assert_eq!(c.get("/").await.unwrap(), (200, "ok from b1\n".to_string()));
    }
    let (status, headers) = c.get("/headers").await.unwrap();
    assert_eq!(status, 200);
    assert!(headers.contains("x-forwarded-proto: https\n"), "{headers}");
    // Another CA's client does not trust the balancer.
    let other = t::client_config(&Ca::new("other").pem(), None);
    let e = t::get(addr, &other, "/").await.unwrap_err();
    assert!(e.contains("handshake"), "{e}");
    // Cleartext HTTP on the TLS port gets no HTTP answer, and is counted.
    let reply = raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(!reply.starts_with("HTTP/"), "{reply:?}");
    wait_until("two failed handshakes counted", || async {
        stats(&lb).await["frontends"][0]["tls_handshake_failures"] == 2
    })
    .await;
    let s = stats(&lb).await;
    assert_eq!(s["frontends"][0]["tls"], true, "{s}");
    let (_, metrics) = get(lb.admin_addr().unwrap(), "/metrics").await.unwrap();
    assert!(metrics.contains("rampart_lb_frontend_tls_handshake_failures_total{frontend=\"web\"} 2"), "{metrics}");
    assert_eq!(b.hits(), 4, "only the TLS requests reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_frontend_requires_a_certificate_from_its_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server ca");
    let clients = Ca::new("client ca");
    let b = Backend::start("b1").await;
    let extra = format!("{HC_OFF}{}", frontend_tls(dir.path(), &ca.server(&["localhost"]), Some(&clients)));
    let lb = start_lb(&one_frontend("http", "round_robin", &[b.addr], &extra)).await;
    let addr = lb.local_addr("web").unwrap();
    let good = t::client_config(&ca.pem(), Some(&clients.client("alice")));
    let reply = t::get(addr, &good, "/").await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200") && reply.ends_with("ok from b1\n"), "{reply:?}");
    // No certificate, or one from another CA (even the server's own CA).
    for (what, cfg) in [
        ("no certificate", t::client_config(&ca.pem(), None)),
        ("another CA", t::client_config(&ca.pem(), Some(&Ca::new("rogue").client("mallory")))),
        ("the server CA", t::client_config(&ca.pem(), Some(&ca.client("eve")))),
    ] {
        let r = t::get(addr, &cfg, "/").await;
        assert!(r.is_err(), "{what}: served {r:?}");
    }
    wait_until("three refused clients counted", || async {
        stats(&lb).await["frontends"][0]["tls_handshake_failures"] == 3
    })
    .await;
    assert_eq!(b.hits(), 1, "a client without a valid certificate reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_tcp_frontend_terminates_tls_for_l4() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test ca");
    let echo = echo_server().await;
    let extra = format!("{HC_OFF}{}", frontend_tls(dir.path(), &ca.server(&["localhost"]), None));
    let lb = start_lb(&one_frontend("tcp", "round_robin", &[echo], &extra)).await;
    let cfg = t::client_config(&ca.pem(), None);
    let mut s = t::connect(lb.local_addr("web").unwrap(), &cfg, "localhost").await.unwrap();
    s.write_all(b"ping over tls").await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, s.read_to_end(&mut out)).await.expect("session ended");
    assert_eq!(String::from_utf8_lossy(&out), "ping over tls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_renewed_certificates_to_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (Ca::new("old ca"), Ca::new("new ca"));
    let b = Backend::start("b1").await;
    // Relative paths: taken from the configuration file's folder.
    let write_certs = |leaf: &Leaf| {
        t::write(dir.path(), "cert.pem", &leaf.cert);
        t::write(dir.path(), "key.pem", &leaf.key);
    };
    write_certs(&old_ca.server(&["localhost"]));
    let path = dir.path().join("lb.toml");
    let toml = one_frontend(
        "http",
        "round_robin",
        &[b.addr],
        &format!("{HC_OFF}[frontend.tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n"),
    );
    std::fs::write(&path, &toml).unwrap();
    let lb = rampart_lb::Lb::start(rampart_lb::config::Config::load(&path).unwrap()).await.unwrap();
    let addr = lb.local_addr("web").unwrap();
    let (trust_old, trust_new) = (t::client_config(&old_ca.pem(), None), t::client_config(&new_ca.pem(), None));
    let mut kept = t::Client::connect(addr, &trust_old).await.unwrap();
    assert_eq!(kept.get("/").await.unwrap().0, 200);
    assert!(t::get(addr, &trust_new, "/").await.is_err());

    // A broken key is refused by the reload, naming the field; the old certificate stays.
    std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
    let e = lb.reload_from_source().await.unwrap_err().to_string();
    assert!(e.contains("frontend[0].tls") && e.contains("key.pem"), "{e}");
    assert!(t::get(addr, &trust_old, "/").await.unwrap().starts_with("HTTP/1.1 200"));

    write_certs(&new_ca.server(&["localhost"]));
    lb.reload_from_source().await.expect("reload with renewed certificate");
    assert_eq!(lb.local_addr("web"), Some(addr), "listener kept");
    let reply = t::get(addr, &trust_new, "/").await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
    assert!(t::get(addr, &trust_old, "/").await.is_err(), "the old certificate is still served");
    // A connection made before the reload goes on.
    assert_eq!(kept.get("/").await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_frontend_handshake_is_bounded_by_the_first_byte_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test ca");
    let b = Backend::start("b1").await;
    let extra = format!(
        "{HC_OFF}[frontend.timeouts]\nfirst_byte_ms = 200\nidle_ms = 600000\nrequest_header_ms = 600000\n{}",
        frontend_tls(dir.path(), &ca.server(&["localhost"]), None)
    );
    let lb = start_lb(&one_frontend("http", "round_robin", &[b.addr], &extra)).await;
    // Connects and never starts the handshake.
    let mut s = TcpStream::connect(lb.local_addr("web").unwrap()).await.unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(DEADLINE, s.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "a silent client kept its TLS connection");
    let s = stats(&lb).await;
    assert_eq!(s["frontends"][0]["conns_closed"]["first_byte_timeout"], 1, "{s}");
    assert_eq!(s["frontends"][0]["tls_handshake_failures"], 0, "{s}");
}

/// `[frontend.backend_tls]` with `ca` written into `dir`, plus `more` lines.
fn backend_tls(dir: &Path, ca: &Ca, more: &str) -> String {
    format!("[frontend.backend_tls]\nca = {:?}\n{more}", t::write(dir, "backend-ca.pem", &ca.pem()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_checks_the_ca_and_name_and_pools_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("backend ca");
    // Default name: the backend's IP address.
    let by_ip = TlsBackend::start("by-ip", &ca.server(&["127.0.0.1"]), None).await;
    let extra = format!("{HC_OFF}{}", backend_tls(dir.path(), &ca, ""));
    let lb = start_lb(&one_frontend("http", "round_robin", &[by_ip.addr], &extra)).await;
    let mut c = Client::connect(lb.local_addr("web").unwrap()).await.unwrap();
    for _ in 0..3 {
        assert_eq!(c.get("/").await.unwrap(), (200, "ok from by-ip\n".to_string()));
    }
    assert_eq!(c.request("POST", "/echo", "body over tls").await.unwrap(), (200, "body over tls".to_string()));
    let s = stats(&lb).await;
    assert_eq!(backend_stat(&s, by_ip.addr)["connects"], 1, "TLS connections to the backend are reused: {s}");
    // A configured name: checked against the certificate and sent as SNI.
    let named = TlsBackend::start("named", &ca.server(&["api.internal"]), None).await;
    let extra = format!("{HC_OFF}{}", backend_tls(dir.path(), &ca, "server_name = \"api.internal\"\n"));
    let lb = start_lb(&one_frontend("http", "round_robin", &[named.addr], &extra)).await;
    assert_eq!(get(lb.local_addr("web").unwrap(), "/").await.unwrap(), (200, "ok from named\n".to_string()));
    // TCP mode to a TLS backend: the balancer speaks TLS on the client's behalf.
    let lb = start_lb(&one_frontend("tcp", "round_robin", &[named.addr], &extra)).await;
    let reply =
        raw_exchange(lb.local_addr("web").unwrap(), b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 200") && reply.ends_with("ok from named\n"), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_with_a_bad_certificate_fails_requests_and_health_checks() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("backend ca");
    let rogue = TlsBackend::start("rogue", &Ca::new("rogue ca").server(&["127.0.0.1"]), None).await;
    let wrong_name = TlsBackend::start("wrong-name", &ca.server(&["other.internal"]), None).await;
    let plain = Backend::start("plain").await;
    for (what, addr) in [("untrusted CA", rogue.addr), ("wrong name", wrong_name.addr), ("no TLS", plain.addr)] {
        let extra = format!("{HC_OFF}[frontend.retries]\nmax_retries = 0\n{}", backend_tls(dir.path(), &ca, ""));
        let lb = start_lb(&one_frontend("http", "round_robin", &[addr], &extra)).await;
        let (status, body) = get(lb.local_addr("web").unwrap(), "/").await.unwrap();
        assert_eq!(status, 502, "{what}: {body}");
        assert!(body.contains("backend_tls_failed"), "{what}: {body}");
        let s = stats(&lb).await;
        assert_eq!(backend_stat(&s, addr)["tls_failures"], 1, "{what}: {s}");
    }
    assert_eq!(rogue.hits() + wrong_name.hits() + plain.hits(), 0, "a request went to a refused backend");
    // Health checks (TCP and HTTP) fail on the certificate and take the backend out.
    let good = TlsBackend::start("good", &ca.server(&["127.0.0.1"]), None).await;
    for kind in ["tcp", "http"] {
        let extra = format!(
            "[frontend.health]\nkind = \"{kind}\"\npath = \"/health\"\ninterval_ms = 20\nfall = 2\n{}",
            backend_tls(dir.path(), &ca, "")
        );
        let lb = start_lb(&one_frontend("http", "round_robin", &[rogue.addr, good.addr], &extra)).await;
        wait_until("the rogue backend is down", || async {
            let s = stats(&lb).await;
            backend_stat(&s, rogue.addr)["healthy"] == false
        })
        .await;
        let s = stats(&lb).await;
        assert_eq!(backend_stat(&s, good.addr)["healthy"], true, "{kind}: {s}");
        assert_eq!(
            backend_stat(&s, good.addr)["health_checks_failed"],
            0,
            "{kind}: checks of the good backend failed: {s}"
        );
        assert!(backend_stat(&s, rogue.addr)["tls_failures"].as_u64().unwrap() >= 2, "{kind}: {s}");
        let mut c = Client::connect(lb.local_addr("web").unwrap()).await.unwrap();
        for _ in 0..4 {
            assert_eq!(c.get("/").await.unwrap(), (200, "ok from good\n".to_string()), "{kind}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_mutual_tls_presents_the_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("backend ca");
    let clients = Ca::new("lb clients");
    let b = TlsBackend::start("mtls", &ca.server(&["127.0.0.1"]), Some(&clients.pem())).await;
    let leaf = clients.client("rampart-lb");
    let cert = t::write(dir.path(), "lb-cert.pem", &leaf.cert);
    let key = t::write(dir.path(), "lb-key.pem", &leaf.key);
    let with_cert = format!("{HC_OFF}{}", backend_tls(dir.path(), &ca, &format!("cert = {cert:?}\nkey = {key:?}\n")));
    let lb = start_lb(&one_frontend("http", "round_robin", &[b.addr], &with_cert)).await;
    assert_eq!(get(lb.local_addr("web").unwrap(), "/").await.unwrap(), (200, "ok from mtls\n".to_string()));
    // Without a client certificate the backend refuses the balancer.
    let without = format!("{HC_OFF}[frontend.retries]\nmax_retries = 0\n{}", backend_tls(dir.path(), &ca, ""));
    let lb = start_lb(&one_frontend("http", "round_robin", &[b.addr], &without)).await;
    let (status, body) = get(lb.local_addr("web").unwrap(), "/").await.unwrap();
    assert_eq!(status, 502, "{body}");
    assert_eq!(b.hits(), 1);
}

#[test]
fn broken_tls_configuration_is_refused_with_the_field_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("ca");
    let leaf = ca.server(&["localhost"]);
    let cert = t::write(dir.path(), "cert.pem", &leaf.cert);
    let key = t::write(dir.path(), "key.pem", &leaf.key);
    let other_key = t::write(dir.path(), "other-key.pem", &ca.server(&["x"]).key);
    let empty = t::write(dir.path(), "empty.pem", "");
    let base = "[[frontend]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\n";
    let backend = "[[frontend.backend]]\naddr = \"127.0.0.1:9\"\n";
    let err = |tls: String| {
        let text = format!("{base}{tls}{backend}");
        rampart_lb::config::Config::parse(&text, "lb.toml").unwrap_err().to_string()
    };
    let missing = dir.path().join("missing.pem");
    for (tls, want) in [
        (format!("[frontend.tls]\ncert = {missing:?}\nkey = {key:?}\n"), "missing.pem: cannot read"),
        (format!("[frontend.tls]\ncert = {empty:?}\nkey = {key:?}\n"), "no certificate"),
        (format!("[frontend.tls]\ncert = {cert:?}\nkey = {cert:?}\n"), "no private key"),
        (format!("[frontend.tls]\ncert = {cert:?}\nkey = {other_key:?}\n"), "do not make a usable"),
        (format!("[frontend.tls]\ncert = {cert:?}\nkey = {key:?}\nclient_ca = {empty:?}\n"), "no certificate"),
        (format!("[frontend.tls]\ncert = {cert:?}\n"), "missing field `key`"),
        (format!("[frontend.tls]\ncert = {cert:?}\nkey = {key:?}\nverify = false\n"), "unknown field `verify`"),
        (format!("[frontend.backend_tls]\nca = {cert:?}\ncert = {cert:?}\n"), "cert and key go together"),
        (format!("[frontend.backend_tls]\nca = {cert:?}\nserver_name = \"bad name!\"\n"), "not a valid server name"),
        (format!("[frontend.backend_tls]\nca = {missing:?}\n"), "cannot read"),
        (format!("[frontend.backend_tls]\nca = {cert:?}\ninsecure = true\n"), "unknown field `insecure`"),
    ] {
        let e = err(tls.clone());
        assert!(e.contains("lb.toml") && e.contains(want), "{tls}: {e}");
    }
    let ok = format!("{base}[frontend.tls]\ncert = {cert:?}\nkey = {key:?}\n{backend}");
    let cfg = rampart_lb::config::Config::parse(&ok, "lb.toml").unwrap();
    assert!(cfg.frontends[0].tls.is_some() && cfg.frontends[0].backend_tls.is_none());
}

#[test]
fn the_shipped_tls_example_loads_with_its_certificates_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let ca = Ca::new("example ca");
    let lb = ca.server(&["localhost"]);
    t::write(&certs, "ca.pem", &ca.pem());
    t::write(&certs, "lb.pem", &lb.cert);
    t::write(&certs, "lb-key.pem", &lb.key);
    let example = include_str!("../../../examples/lb-tls.toml");
    let path = t::write(dir.path(), "lb-tls.toml", example);
    let cfg = rampart_lb::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let https = &cfg.frontends[0];
    assert_eq!(https.tls.as_ref().unwrap().cert, certs.join("lb.pem"));
    assert_eq!(https.backend_tls.as_ref().unwrap().server_name.as_deref(), Some("backend.internal"));
    assert!(cfg.frontends[1].tls.is_some() && cfg.frontends[1].backend_tls.is_none());
    // Without the files beside it, it names the missing one.
    std::fs::remove_file(certs.join("lb-key.pem")).unwrap();
    let e = rampart_lb::config::Config::load(&path).unwrap_err().to_string();
    assert!(e.contains("lb-key.pem: cannot read") && e.contains("frontend[0].tls"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_over_tls_is_chosen_by_alpn_when_enabled() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test ca");
    let b = Backend::start("b1").await;
    let tls = frontend_tls(dir.path(), &ca.server(&["localhost"]), None);
    for http2 in [true, false] {
        let extra = format!("http2 = {http2}\n{HC_OFF}{tls}");
        let lb = start_lb(&one_frontend("http", "round_robin", &[b.addr], &extra)).await;
        let mut cfg = (*t::client_config(&ca.pem(), None)).clone();
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let s = t::connect(lb.local_addr("web").unwrap(), &std::sync::Arc::new(cfg), "localhost").await.unwrap();
        let alpn = s.get_ref().1.alpn_protocol().map(|p| p.to_vec());
        if !http2 {
            assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]), "h2 offered by a frontend without http2");
            continue;
        }
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(s),
        )
        .await
        .expect("h2 handshake");
        tokio::spawn(conn);
        let req = hyper::Request::builder().uri("https://localhost/headers").body(Empty::<Bytes>::new()).unwrap();
        let resp = sender.send_request(req).await.expect("h2 response");
        assert_eq!((resp.status().as_u16(), resp.version()), (200, hyper::Version::HTTP_2));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("x-forwarded-proto: https\n") && body.contains("via: 2 rampart\n"), "{body}");
    }
}
