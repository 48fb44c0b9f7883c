//! The transport end to end on loopback: pipelining, reconnects, bad frames, the connection
//! cap, timeouts, and peer TLS (who is let in, and what the handler learns).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use bytes::Bytes;
use rampart_tls::dev::DevCa;
use rampart_tls::rustls;
use rampart_tls::rustls::pki_types::pem::PemObject;
use rampart_tls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rampart_tls::{PeerPem, PeerTls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::frame::{frame_header, KIND_REQUEST};

/// Echoes requests (or fails on `fail`, or answers `who` with the sender's certificate id),
/// and counts every call.
#[derive(Default)]
struct Echo {
    calls: AtomicUsize,
}

impl Handler for Echo {
    fn handle(&self, from: &PeerIdentity, request: Bytes) -> BoxFuture<Result<Bytes, String>> {
        self.calls.fetch_add(1, Relaxed);
        let from = *from;
        Box::pin(async move {
            match request.as_ref() {
                b"fail" => Err("asked to fail".into()),
                b"who" => Ok(Bytes::from(format!("{:?}", from.node))),
                _ => Ok(request),
            }
        })
    }
}

async fn serve_with(cfg: Config) -> (SocketAddr, Arc<Echo>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let echo = Arc::new(Echo::default());
    tokio::spawn(serve(l, echo.clone(), cfg));
    (addr, echo)
}

async fn server() -> SocketAddr {
    serve_with(Config::default()).await.0
}

/// Waits until `f` holds, or panics with `what` after a generous deadline.
async fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads until the server closes the connection (EOF or reset); true if it did so without
/// sending a single byte.
async fn closed_without_answer(s: &mut (impl AsyncReadExt + Unpin)) -> bool {
    closed(s).await.is_empty()
}

/// Everything the server sends until it closes the connection (EOF or reset).
async fn closed(s: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut got = Vec::new();
    let mut b = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), s.read(&mut b)).await.expect("server never closed") {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&b[..n]),
        }
    }
}

/// TLS record type of an alert: what a TLS server may send a plaintext client before closing.
const TLS_ALERT_RECORD: u8 = 0x15;

fn tls_of(ca: &DevCa, id: u64) -> Arc<PeerTls> {
    let n = ca.node_cert(id).unwrap();
    let pem = PeerPem { ca: ca.pem().cert.as_bytes(), cert: n.cert.as_bytes(), key: n.key.as_bytes() };
    Arc::new(PeerTls::from_pem(pem).unwrap())
}

fn tls_config(ca: &DevCa, id: u64) -> Config {
    Config { tls: Some(tls_of(ca, id)), ..Config::default() }
}

/// A rustls client that trusts `trusted` and presents `cert` (or nothing), for attackers.
fn raw_client(trusted: &DevCa, cert: Option<&rampart_tls::dev::CertPem>) -> rampart_tls::tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(trusted.pem().cert.as_bytes()).unwrap()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(rampart_tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match cert {
        None => builder.with_no_client_auth(),
        Some(c) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(c.cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(c.key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    rampart_tls::tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// One request frame, as a peer would send it.
fn request_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = frame_header(payload.len(), 1, KIND_REQUEST).to_vec();
    f.extend_from_slice(payload);
    f
}

#[tokio::test]
async fn pipelined_calls_match_their_answers() {
    let addr = server().await;
    let peer = Peer::new(1, addr, Some("127.0.0.1".parse().unwrap()), Config::default());
    let mut calls = Vec::new();
    for i in 0..500u32 {
        let p = peer.clone();
        calls.push(tokio::spawn(async move {
            let msg = Bytes::from(i.to_string());
            let got = p.call(msg.clone(), Duration::from_secs(10)).await.unwrap();
            assert_eq!(got, msg);
        }));
    }
    for c in calls {
        c.await.unwrap();
    }
    let err = peer.call(Bytes::from_static(b"fail"), Duration::from_secs(10)).await.unwrap_err();
    assert!(matches!(err, CallError::Remote { .. }), "{err}");
    let who = peer.call(Bytes::from_static(b"who"), Duration::from_secs(10)).await.unwrap();
    assert_eq!(who, "None", "without TLS nothing about the sender is proven");
}

#[tokio::test]
async fn unreachable_peer_is_not_sent() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let peer = Peer::new(1, addr, None, Config::default());
    let err = peer.call(Bytes::from_static(b"x"), Duration::from_secs(5)).await.unwrap_err();
    assert!(err.certainly_not_delivered(), "{err}");
}

#[tokio::test]
async fn garbage_and_oversized_frames_disconnect_without_panic() {
    let cfg = Config::default();
    let stats = cfg.stats.clone();
    let (addr, _) = serve_with(cfg).await;
    // Oversized declared length.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let mut b = [0u8; 1];
    assert_eq!(s.read(&mut b).await.unwrap(), 0, "server must close the connection");
    // Too-short length.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0, 0, 0, 1, 7]).await.unwrap();
    assert_eq!(s.read(&mut b).await.unwrap(), 0);
    // Wrong kind.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1, 9]).await.unwrap();
    assert_eq!(s.read(&mut b).await.unwrap(), 0);
    assert_eq!(stats.bad_frames.load(Relaxed), 3);
    // The server still works.
    let peer = Peer::new(1, addr, None, Config::default());
    assert_eq!(peer.call(Bytes::from_static(b"ok"), Duration::from_secs(5)).await.unwrap(), "ok");
}

#[tokio::test]
async fn reconnects_after_the_connection_drops() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let cfg =
        Config { backoff_min: Duration::from_millis(1), backoff_max: Duration::from_millis(5), ..Config::default() };
    let peer = Peer::new(1, addr, None, cfg);
    let p2 = peer.clone();
    let first = tokio::spawn(async move { p2.call(Bytes::from_static(b"a"), Duration::from_secs(5)).await });
    // Accept the first connection, read a little of the request, then drop it.
    let (mut s, _) = l.accept().await.unwrap();
    let mut b = [0u8; 4];
    s.read_exact(&mut b).await.unwrap();
    drop(s);
    let err = first.await.unwrap().unwrap_err();
    assert!(matches!(err, CallError::Lost { .. }), "a written request must be reported as maybe-delivered: {err}");
    tokio::spawn(serve(l, Arc::new(Echo::default()), Config::default()));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match peer.call(Bytes::from_static(b"b"), Duration::from_secs(1)).await {
            Ok(v) => {
                assert_eq!(v, "b");
                break;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "never reconnected: {e}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

#[tokio::test]
async fn a_stalled_half_frame_and_a_silent_connection_are_closed_by_their_timeouts() {
    let cfg = Config {
        frame_read_timeout: Duration::from_millis(200),
        handshake_timeout: Duration::from_millis(200),
        ..Config::default()
    };
    let stats = cfg.stats.clone();
    let (addr, echo) = serve_with(cfg).await;
    // Half a frame, then nothing.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let frame = request_frame(b"0123456789");
    s.write_all(&frame[..frame.len() - 4]).await.unwrap();
    assert!(closed_without_answer(&mut s).await);
    assert_eq!(stats.frame_timeouts.load(Relaxed), 1);
    // A connection that never sends its first frame.
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert!(closed_without_answer(&mut s).await);
    assert_eq!(stats.handshake_timeouts.load(Relaxed), 1);
    assert_eq!(echo.calls.load(Relaxed), 0);
    wait_until("both connections to be counted closed", || stats.inbound_open.load(Relaxed) == 0).await;
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_and_the_cap_frees_up() {
    let cfg = Config { inbound_connections_max: 2, handshake_timeout: Duration::from_secs(600), ..Config::default() };
    let stats = cfg.stats.clone();
    let (addr, _) = serve_with(cfg).await;
    let a = TcpStream::connect(addr).await.unwrap();
    let _b = TcpStream::connect(addr).await.unwrap();
    wait_until("two open connections", || stats.inbound_open.load(Relaxed) == 2).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    assert!(closed_without_answer(&mut c).await, "the third connection is closed at once");
    assert_eq!(stats.inbound_refused.load(Relaxed), 1);
    drop(a);
    wait_until("a slot to free up", || stats.inbound_open.load(Relaxed) == 1).await;
    let peer = Peer::new(1, addr, None, Config::default());
    assert_eq!(peer.call(Bytes::from_static(b"ok"), Duration::from_secs(5)).await.unwrap(), "ok");
    let mut out = String::new();
    stats.render_prometheus(&mut out);
    assert!(out.contains("\nrampart_peer_connections_refused_total 1\n"), "{out}");
}

#[tokio::test]
async fn members_call_each_other_and_the_handler_sees_the_certificates_node() {
    let ca = DevCa::generate().unwrap();
    let (addr, _) = serve_with(tls_config(&ca, 1)).await;
    let peer = Peer::new(1, addr, None, tls_config(&ca, 2));
    assert_eq!(peer.call(Bytes::from_static(b"who"), Duration::from_secs(10)).await.unwrap(), "Some(2)");
    let mut calls = Vec::new();
    for i in 0..100u32 {
        let p = peer.clone();
        calls.push(tokio::spawn(async move {
            let msg = Bytes::from(vec![i as u8; 1000 * i as usize]);
            assert_eq!(p.call(msg.clone(), Duration::from_secs(10)).await.unwrap(), msg);
        }));
    }
    for c in calls {
        c.await.unwrap();
    }
}

#[tokio::test]
async fn a_client_refuses_a_server_that_is_not_the_node_it_called() {
    let ca = DevCa::generate().unwrap();
    let (addr, echo) = serve_with(tls_config(&ca, 2)).await;
    let cfg = tls_config(&ca, 1);
    let stats = cfg.stats.clone();
    let peer = Peer::new(3, addr, None, cfg);
    let err = peer.call(Bytes::from_static(b"x"), Duration::from_secs(10)).await.unwrap_err();
    assert!(err.certainly_not_delivered(), "{err}");
    assert!(err.to_string().contains("peer TLS failed"), "{err}");
    assert_eq!(stats.outbound_handshake_failures.load(Relaxed), 1);
    assert_eq!(echo.calls.load(Relaxed), 0);
}

#[tokio::test]
async fn strangers_are_refused_before_any_frame_reaches_the_handler() {
    let ca = DevCa::generate().unwrap();
    let other = DevCa::generate().unwrap();
    let cfg = tls_config(&ca, 1);
    let stats = cfg.stats.clone();
    let (addr, echo) = serve_with(cfg).await;
    let frame = request_frame(b"who");
    let server_name = rampart_tls::node_server_name(1);

    // A plaintext client: its frame is not TLS.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&frame).await.unwrap();
    let got = closed(&mut s).await;
    assert!(got.is_empty() || got[0] == TLS_ALERT_RECORD, "a plaintext client gets no answer but an alert: {got:?}");
    wait_until("the plaintext client to be refused", || stats.inbound_handshake_failures.load(Relaxed) == 1).await;

    // A plaintext Peer fails its call.
    let plain = Peer::new(1, addr, None, Config::default());
    assert!(plain.call(Bytes::from_static(b"who"), Duration::from_secs(10)).await.is_err());
    wait_until("the plaintext peer to be refused", || stats.inbound_handshake_failures.load(Relaxed) == 2).await;

    // No client certificate; another CA's node certificate; this CA's certificate without a
    // node name. Each trusts the server, so only the server's checks stand in the way.
    let foreign = other.node_cert(2).unwrap();
    let nameless =
        ca.issue("nameless", vec![], vec![rampart_tls::dev::rcgen::ExtendedKeyUsagePurpose::ClientAuth]).unwrap();
    for (n, cert) in [(3, None), (4, Some(&foreign)), (5, Some(&nameless))] {
        let tcp = TcpStream::connect(addr).await.unwrap();
        // In TLS 1.3 the client finishes first; the server's verdict comes after.
        if let Ok(mut s) = raw_client(&ca, cert).connect(server_name.clone(), tcp).await {
            let _ = s.write_all(&frame).await;
            let _ = s.flush().await;
            assert!(closed_without_answer(&mut s).await, "case {n}: refused client got an answer");
        }
        wait_until("the refusal to be counted", || stats.inbound_handshake_failures.load(Relaxed) == n).await;
    }
    assert_eq!(echo.calls.load(Relaxed), 0, "no refused client reached the handler");

    // A member still gets through.
    let member = Peer::new(1, addr, None, tls_config(&ca, 2));
    assert_eq!(member.call(Bytes::from_static(b"who"), Duration::from_secs(10)).await.unwrap(), "Some(2)");
    assert_eq!(echo.calls.load(Relaxed), 1);
}

#[test]
fn a_claimed_sender_must_be_the_certificates_node() {
    let remote: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let tls = PeerIdentity { remote, node: Some(2) };
    assert_eq!(tls.check_claim(2), Ok(()));
    let e = tls.check_claim(3).unwrap_err();
    assert_eq!(e, "refused: the peer's certificate names node 2 but the message claims to be from node 3");
    let plain = PeerIdentity { remote, node: None };
    assert_eq!(plain.check_claim(3), Ok(()), "without TLS nothing can be checked");
}

#[tokio::test]
async fn one_address_cannot_hold_more_than_its_share_of_unfinished_connections() {
    let cfg = Config { inbound_connections_max: 100, handshake_timeout: Duration::from_secs(600), ..Config::default() };
    let stats = cfg.stats.clone();
    let (addr, _) = serve_with(cfg).await;
    // Silent connections from 127.0.0.1: they never send a first frame.
    let mut silent = Vec::new();
    for _ in 0..crate::server::UNAUTHENTICATED_PER_IP_MAX {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let n = crate::server::UNAUTHENTICATED_PER_IP_MAX as u64;
    wait_until("the silent connections to be open", || stats.inbound_open.load(Relaxed) == n).await;
    let mut one_more = TcpStream::connect(addr).await.unwrap();
    assert!(closed_without_answer(&mut one_more).await, "past the per-address allowance: closed at once");
    assert_eq!(stats.inbound_refused.load(Relaxed), 1);
    // Another address is not affected.
    let other = Peer::new(1, addr, Some("127.0.0.2".parse().unwrap()), Config::default());
    assert_eq!(other.call(Bytes::from_static(b"ok"), Duration::from_secs(5)).await.unwrap(), "ok");
    // Once one silent connection goes, 127.0.0.1 gets in again, and a connection that sent
    // its first frame no longer counts against the allowance.
    drop(silent.pop());
    wait_until("a silent connection to close", || stats.inbound_open.load(Relaxed) == n).await;
    let local = Peer::new(1, addr, Some("127.0.0.1".parse().unwrap()), Config::default());
    assert_eq!(local.call(Bytes::from_static(b"ok"), Duration::from_secs(5)).await.unwrap(), "ok");
    silent.push(TcpStream::connect(addr).await.unwrap());
    wait_until("the replacement to be open", || stats.inbound_open.load(Relaxed) == n + 2).await;
    assert_eq!(stats.inbound_refused.load(Relaxed), 1);
}
