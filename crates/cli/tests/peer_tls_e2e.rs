//! Mutual TLS between peers, end to end: `rampart certs` makes the certificates, three real
//! `rampart server` processes in each replication mode use them, and the cluster serves
//! reads and writes. A forged peer message sent in plaintext gets no answer, and a message
//! sent with node 2's certificate but claiming to come from node 3 is refused, while the
//! cluster keeps serving. `rampart up --tls` starts a cluster with peer TLS on.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use rampart_resp::client::RespClient;
use rampart_resp::Value;
use rampart_transport::{CallError, Peer, PeerTls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MM: &[&str] = &["--replication", "multi-master"];
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A term far beyond anything the cluster reached: a forged vote that took effect would show.
const FORGED_TERM: u64 = 1_000_000;

/// Runs `rampart certs` for nodes 1..=3 into `dir`.
fn make_certs(dir: &Path) {
    let out = Command::new(BIN).args(["certs", "--nodes", "1,2,3", "--out"]).arg(dir).output().unwrap();
    assert!(out.status.success(), "rampart certs failed: {}", String::from_utf8_lossy(&out.stderr));
    for f in ["ca.pem", "ca-key.pem", "node-1.pem", "node-3-key.pem", "server.pem", "server-key.pem"] {
        assert!(dir.join(f).exists(), "rampart certs did not write {f}");
    }
}

fn tls_flags(dir: &Path, id: u64) -> Vec<String> {
    let p = |f: String| dir.join(f).display().to_string();
    vec![
        "--peer-tls-ca".into(),
        p("ca.pem".into()),
        "--peer-tls-cert".into(),
        p(format!("node-{id}.pem")),
        "--peer-tls-key".into(),
        p(format!("node-{id}-key.pem")),
    ]
}

/// Node `id`'s peer TLS, as a test holding its certificate and key would use it.
fn peer_tls(dir: &Path, id: u64) -> Arc<PeerTls> {
    let tls = PeerTls::from_files(
        &dir.join("ca.pem"),
        &dir.join(format!("node-{id}.pem")),
        &dir.join(format!("node-{id}-key.pem")),
    )
    .unwrap();
    Arc::new(tls)
}

/// A 3-node cluster with peer TLS; the certificates live as long as the returned dir.
fn start_tls_cluster(extra: &[&str]) -> (Cluster, tempfile::TempDir) {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let dir = certs.path().to_path_buf();
    let c = Cluster::start_with(3, extra, move |id| tls_flags(&dir, id));
    (c, certs)
}

/// One request frame of the peer protocol: `u32 length | u64 id | u8 kind (0) | payload`.
fn request_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = ((payload.len() + 9) as u32).to_be_bytes().to_vec();
    f.extend_from_slice(&1u64.to_be_bytes());
    f.push(0);
    f.extend_from_slice(payload);
    f
}

/// Sends `payload` as a plaintext peer frame to `peer_addr` and returns what came back before
/// the node closed the connection.
async fn send_plaintext(peer_addr: &str, payload: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(peer_addr).await.unwrap();
    s.write_all(&request_frame(payload)).await.unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut b)).await.expect("the node never closed the connection") {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&b[..n]),
        }
    }
}

/// Asserts a plaintext peer frame gets no peer answer: at most a TLS alert (record type 0x15),
/// then the connection closes; the node counts the refusal.
async fn assert_plaintext_refused(c: &Cluster, id: u64, payload: &[u8]) {
    let before = metric(c, id, "rampart_peer_tls_inbound_handshake_failures_total").await;
    let got = send_plaintext(&c.specs[&id].peer, payload).await;
    assert!(got.is_empty() || got[0] == 0x15, "a plaintext peer frame got an answer: {got:?}");
    wait_for("the refused handshake in /metrics", Duration::from_secs(20), || async {
        (metric(c, id, "rampart_peer_tls_inbound_handshake_failures_total").await > before).then_some(())
    })
    .await;
}

/// Calls node `target` with node `as_node`'s certificate and returns the answer.
async fn call_with_cert(
    c: &Cluster,
    certs: &Path,
    as_node: u64,
    target: u64,
    payload: Bytes,
) -> Result<Bytes, CallError> {
    let addr = c.specs[&target].peer.parse().unwrap();
    let cfg = rampart_transport::Config { tls: Some(peer_tls(certs, as_node)), ..Default::default() };
    Peer::new(target, addr, None, cfg).call(payload, CALL_TIMEOUT).await
}

fn assert_forgery_refused(r: Result<Bytes, CallError>) {
    match r {
        Err(CallError::Remote { message, .. }) => {
            assert!(message.contains("certificate names node 2 but the message claims to be from node 3"), "{message}")
        }
        other => panic!("a message claiming another sender was not refused: {other:?}"),
    }
}

/// Retries `args` while the node answers an error (a cluster still settling), up to a deadline.
async fn until_ok(cl: &mut RespClient, args: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match cl.cmd_str(args).await {
            Ok(Value::Error(e)) => assert!(Instant::now() < deadline, "{args:?} kept failing: {e}"),
            Ok(v) => return v,
            Err(e) => panic!("{args:?}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes `key` through node 1 and reads it back through every node.
async fn write_and_read_everywhere(c: &Cluster, key: &str, value: &str) {
    let mut c1 = resp(c, 1).await;
    assert_eq!(until_ok(&mut c1, &["SET", key, value]).await, Value::ok());
    for id in [1, 2, 3] {
        let mut cl = resp(c, id).await;
        assert_eq!(bulk(&until_ok(&mut cl, &["GET", key]).await).as_deref(), Some(value), "GET {key} on node {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_mode_with_peer_tls_serves_and_refuses_forged_peers() {
    use openraft::raft::VoteRequest;
    use openraft::Vote;
    use rampart_raft::network::{PeerRequest, PeerResponse};

    let (c, certs) = start_tls_cluster(&[]);
    let leader = wait_leader(&c, &[1, 2, 3]).await;
    write_and_read_everywhere(&c, "tls/k", "v1").await;

    let forged_vote =
        rampart_transport::codec::encode(&PeerRequest::Vote(VoteRequest::new(Vote::new(FORGED_TERM, 3), None)))
            .unwrap();
    // In plaintext: no answer at all.
    assert_plaintext_refused(&c, 1, &forged_vote).await;
    // With node 2's certificate, claiming to be node 3: refused with a clear error.
    assert_forgery_refused(call_with_cert(&c, certs.path(), 2, 1, forged_vote.clone()).await);
    let hello = PeerRequest::Hello { id: 3, info: Default::default() };
    let forged_hello = rampart_transport::codec::encode(&hello).unwrap();
    assert_forgery_refused(call_with_cert(&c, certs.path(), 2, 1, forged_hello).await);
    // A member's certificate is enough for a read-index request (it names no sender).
    let read_index = rampart_transport::codec::encode(&PeerRequest::ReadIndex).unwrap();
    let raw = call_with_cert(&c, certs.path(), 2, leader, read_index).await.unwrap();
    let answer: PeerResponse = rampart_transport::codec::decode(&raw).unwrap();
    assert!(matches!(answer, PeerResponse::ReadIndex(Ok(_))), "{answer:?}");

    // The forged votes changed nothing, and the cluster keeps serving.
    for id in [1, 2, 3] {
        let term = status(&c, id).await.unwrap()["term"].as_u64().unwrap();
        assert!(term < FORGED_TERM, "node {id} moved to the forged term {term}");
    }
    assert_eq!(wait_leader(&c, &[1, 2, 3]).await, leader, "the forged vote must not change the leader");
    write_and_read_everywhere(&c, "tls/k", "v2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_master_mode_with_peer_tls_serves_and_refuses_forged_peers() {
    use rampart_mm::wire::{membership_fingerprint, Envelope, PeerRequest};
    use rampart_paxos::{Ballot, NodeId, Request};

    let (c, certs) = start_tls_cluster(MM);
    write_and_read_everywhere(&c, "tls/k", "v1").await;

    // The attack of issue 10: a Prepare with the highest ballot, which would exhaust the key.
    let envelope = Envelope {
        from: 3,
        epoch: 0,
        cluster: membership_fingerprint([1, 2, 3]),
        request: PeerRequest::Paxos {
            requests: vec![Request::Prepare {
                key: b"tls/k".to_vec(),
                ballot: Ballot { counter: u64::MAX, node: NodeId(3) },
            }],
        },
    };
    let forged = rampart_transport::codec::encode(&envelope).unwrap();
    assert_plaintext_refused(&c, 1, &forged).await;
    assert_forgery_refused(call_with_cert(&c, certs.path(), 2, 1, forged).await);
    assert_eq!(metric(&c, 1, "rampart_peer_connections_refused_total").await, 0);
    assert!(metric(&c, 1, "rampart_peer_connections_open").await >= 2, "the members' own connections");

    // The key is not poisoned: every node still writes it.
    for (id, v) in [(1, "v2"), (2, "v3"), (3, "v4")] {
        let mut cl = resp(&c, id).await;
        assert_eq!(until_ok(&mut cl, &["SET", "tls/k", v]).await, Value::ok(), "SET on node {id}");
        assert_eq!(bulk(&until_ok(&mut cl, &["GET", "tls/k"]).await).as_deref(), Some(v));
    }
}

#[test]
fn a_node_started_with_another_nodes_certificate_refuses_to_start() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let mut c = Cluster::start(0, &[]);
    c.add_spec(1);
    c.initial_cluster = format!("1={}", c.specs[&1].peer);
    let mut flags = tls_flags(certs.path(), 1);
    flags[3] = certs.path().join("node-2.pem").display().to_string();
    flags[5] = certs.path().join("node-2-key.pem").display().to_string();
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (status, stderr) = c.run_expecting_exit(1, &args, Duration::from_secs(30));
    assert!(!status.success());
    assert!(stderr.contains("names node 2 but this node's id is 1"), "{stderr}");
    let (status, stderr) = c.run_expecting_exit(1, &args[..4], Duration::from_secs(30));
    assert!(!status.success());
    assert!(stderr.contains("missing: peer_tls_key"), "{stderr}");
}

/// 31 consecutive free ports below the ephemeral range, for `rampart up --base-port`.
fn free_block() -> u16 {
    let start = 21_000 + (std::process::id() % 200) as u16 * 40;
    for base in (start..31_000).step_by(40).chain((20_000..start).step_by(40)) {
        if (0..31).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no block of 31 free ports");
}

/// Runs `redis-cli --tls` against 127.0.0.1:`port` until it prints `want` (the balancer may
/// still be checking its backends), within a deadline; returns the output.
fn until_cli_ok(ca: &Path, port: u16, args: &[&str], want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("redis-cli")
            .args(["--tls", "--cacert"])
            .arg(ca)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli is installed (.ci/run installs redis-server)");
        let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if got == want {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "redis-cli {args:?} on port {port}: {got:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_tls_starts_a_cluster_whose_peers_refuse_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_block();
    let mut up = Command::new(BIN)
        .args(["up", "--tls", "--base-port", &base.to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = up.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut lines = Vec::new();
    while !lines.last().is_some_and(|l: &String| l.starts_with("cluster ready")) {
        let left = deadline.saturating_duration_since(Instant::now());
        lines.push(rx.recv_timeout(left).unwrap_or_else(|_| panic!("up never got ready: {lines:?}")));
    }
    assert!(lines.iter().any(|l| l.starts_with("peer TLS on")), "{lines:?}");
    assert!(dir.path().join("certs/node-3.pem").exists());

    let ca = dir.path().join("certs/ca.pem");
    assert!(lines.iter().any(|l| l.starts_with("client TLS on")), "{lines:?}");
    // The balancer's RESP frontend and a node's RESP port speak TLS to redis-cli.
    for port in [base, base + 1] {
        let set = until_cli_ok(&ca, port, &["SET", "up/tls", "yes"], "OK");
        assert_eq!(set, "OK");
        assert_eq!(until_cli_ok(&ca, port, &["GET", "up/tls"], "yes"), "yes");
    }
    // A plaintext RESP client gets no answer from a TLS listener.
    let mut plain = RespClient::connect(format!("127.0.0.1:{}", base + 1))
        .await
        .unwrap()
        .with_read_timeout(Duration::from_secs(10));
    assert!(plain.cmd_str(&["PING"]).await.is_err(), "plaintext RESP must not be served");
    // curl over HTTPS, through the balancer and straight to node 2.
    for port in [base + 10, base + 12] {
        let url = format!("https://localhost:{port}/v1/kv/up/tls");
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "10", "--cacert"])
            .arg(&ca)
            .arg(&url)
            .output()
            .unwrap();
        assert!(out.status.success(), "{url}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "yes", "{url}");
    }
    // Node 1's peer port speaks only TLS.
    let got = send_plaintext(&format!("127.0.0.1:{}", base + 21), b"hello").await;
    assert!(got.is_empty() || got[0] == 0x15, "{got:?}");

    // SAFETY: kill(2) on the child we spawned and still hold.
    unsafe {
        libc::kill(up.id() as i32, libc::SIGTERM);
    }
    let stop_deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if up.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > stop_deadline {
            let _ = up.kill();
            let _ = up.wait();
            panic!("up did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
