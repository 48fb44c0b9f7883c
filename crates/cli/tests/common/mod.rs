//! Test harness: real `rampart server` processes on loopback ports the
//! harness picks itself, killed and paused with real signals.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rampart_client::http::Bytes;
pub use rampart_client::http::{Method, StatusCode};
use rampart_resp::client::RespClient;
use rampart_resp::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_rampart");

/// A free loopback port below the kernel's ephemeral range (32768 and up on
/// Linux), so the outgoing connections of running nodes, which take
/// ephemeral ports, can never grab it between this check and the bind. Each
/// test process starts at its own place in the range.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN);
}

pub struct NodeSpec {
    pub id: u64,
    pub peer: String,
    pub resp: String,
    pub http: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub specs: BTreeMap<u64, NodeSpec>,
    pub procs: BTreeMap<u64, Child>,
    pub initial_cluster: String,
    pub extra_args: Vec<String>,
    /// Arguments of one node only (after `extra_args`), such as its own certificate.
    pub node_args: BTreeMap<u64, Vec<String>>,
}

impl Cluster {
    /// Starts nodes 1..=n as one cluster.
    pub fn start(n: u64, extra_args: &[&str]) -> Cluster {
        Cluster::start_with(n, extra_args, |_| Vec::new())
    }

    /// Starts nodes 1..=n as one cluster, node `id` with `node_args(id)` too.
    pub fn start_with(n: u64, extra_args: &[&str], node_args: impl Fn(u64) -> Vec<String>) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Cluster {
            dir,
            specs: BTreeMap::new(),
            procs: BTreeMap::new(),
            initial_cluster: String::new(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            node_args: (1..=n).map(|id| (id, node_args(id))).collect(),
        };
        for id in 1..=n {
            c.add_spec(id);
        }
        c.initial_cluster = c.specs.values().map(|s| format!("{}={}", s.id, s.peer)).collect::<Vec<_>>().join(",");
        for id in 1..=n {
            c.spawn(id);
        }
        c
    }

    pub fn add_spec(&mut self, id: u64) -> &NodeSpec {
        let spec = NodeSpec {
            id,
            peer: format!("127.0.0.1:{}", free_port()),
            resp: format!("127.0.0.1:{}", free_port()),
            http: format!("127.0.0.1:{}", free_port()),
            data_dir: self.dir.path().join(format!("n{id}")),
            log: self.dir.path().join(format!("n{id}.log")),
        };
        self.specs.insert(id, spec);
        &self.specs[&id]
    }

    /// Starts (or restarts) node `id` with the cluster's initial-cluster flag.
    pub fn spawn(&mut self, id: u64) {
        let ic = self.initial_cluster.clone();
        self.spawn_with_initial(id, &ic);
    }

    pub fn spawn_with_initial(&mut self, id: u64, initial_cluster: &str) {
        let s = &self.specs[&id];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&s.log).unwrap();
        let child = Command::new(BIN)
            .arg("server")
            .args(["--id", &id.to_string()])
            .arg("--data-dir")
            .arg(&s.data_dir)
            .args(["--peer-addr", &s.peer, "--resp-addr", &s.resp, "--http-addr", &s.http])
            .args(["--initial-cluster", initial_cluster])
            .args(&self.extra_args)
            .args(self.node_args.get(&id).into_iter().flatten())
            .env("RAMPART_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.procs.insert(id, child);
    }

    pub fn resp_addr(&self, id: u64) -> String {
        self.specs[&id].resp.clone()
    }

    pub fn http(&self, id: u64) -> String {
        format!("http://{}", self.specs[&id].http)
    }

    pub fn pid(&self, id: u64) -> i32 {
        self.procs[&id].id() as i32
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.procs.remove(&id) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn signal(&self, id: u64, sig: i32) {
        // SAFETY: kill(2) on a child we spawned and still hold.
        unsafe {
            libc::kill(self.pid(id), sig);
        }
    }

    pub fn log_tail(&self, id: u64) -> String {
        let t = std::fs::read_to_string(&self.specs[&id].log).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn running(&self) -> Vec<u64> {
        self.procs.keys().copied().collect()
    }

    /// Runs node `id` (its addresses, data dir and the cluster's
    /// initial-cluster flag) with `extra_args` in place of the cluster's extra
    /// arguments, for a start that is expected to be refused. Waits up to
    /// `timeout` for the process to exit on its own and returns its exit
    /// status and stderr; if it is still running then, kills it and panics.
    /// The node must not be running (see `kill`).
    pub fn run_expecting_exit(
        &self,
        id: u64,
        extra_args: &[&str],
        timeout: Duration,
    ) -> (std::process::ExitStatus, String) {
        assert!(!self.procs.contains_key(&id), "node {id} is still running");
        let s = &self.specs[&id];
        let err_path = self.dir.path().join(format!("n{id}.refused.stderr"));
        let err_file = std::fs::File::create(&err_path).unwrap();
        let mut child = Command::new(BIN)
            .arg("server")
            .args(["--id", &id.to_string()])
            .arg("--data-dir")
            .arg(&s.data_dir)
            .args(["--peer-addr", &s.peer, "--resp-addr", &s.resp, "--http-addr", &s.http])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(extra_args)
            .env("RAMPART_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err_file)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                let err = std::fs::read_to_string(&err_path).unwrap_or_default();
                panic!("node {id} with {extra_args:?} was expected to refuse to start but still runs; stderr:\n{err}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (status, std::fs::read_to_string(&err_path).unwrap_or_default())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // CI keeps only the test's output: the nodes' last lines are the evidence of a flake.
            for id in self.specs.keys() {
                eprintln!("--- last lines of node {id}'s log ---\n{}", self.log_tail(*id));
            }
            if let Ok(d) = tempfile::tempdir() {
                let kept = std::mem::replace(&mut self.dir, d).keep();
                eprintln!("test failed: node data and logs kept in {}", kept.display());
            }
        }
        for (_, c) in self.procs.iter_mut() {
            // SAFETY: as in `signal`; a stopped child must be resumed to die cleanly.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGCONT);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `f` until it returns Some or the deadline passes (then panics with `what`).
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A whole HTTP answer.
#[derive(Debug)]
pub struct HttpReply {
    pub status: StatusCode,
    pub body: Bytes,
}

impl HttpReply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; None if it is not JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// One HTTP request through `rampart_client::http` (the body goes as raw
/// bytes unless empty); the whole answer must arrive within `timeout`.
pub async fn http_request(
    method: Method,
    url: &str,
    body: impl Into<Bytes>,
    timeout: Duration,
) -> Result<HttpReply, rampart_client::http::Error> {
    let (status, body) = rampart_client::http::request(method, url, body, timeout).await?;
    Ok(HttpReply { status, body })
}

/// [`http_request`] with a JSON body.
pub async fn http_request_json(
    method: Method,
    url: &str,
    value: &serde_json::Value,
    timeout: Duration,
) -> Result<HttpReply, rampart_client::http::Error> {
    let (status, body) = rampart_client::http::request_json(method, url, value, timeout).await?;
    Ok(HttpReply { status, body })
}

pub async fn status(c: &Cluster, id: u64) -> Option<serde_json::Value> {
    let url = format!("{}/v1/status", c.http(id));
    http_request(Method::GET, &url, "", Duration::from_millis(500)).await.ok()?.json()
}

/// Waits until every node in `ids` answers `GET /v1/health` with 200: in multi-master mode that
/// includes a brand-new node's first-boot check, which needs every member to answer, so a test
/// that kills a node must wait for this first or the others may never start voting.
pub async fn wait_healthy(c: &Cluster, ids: &[u64]) {
    for &id in ids {
        let url = format!("{}/v1/health", c.http(id));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let last = match http_request(Method::GET, &url, "", Duration::from_secs(2)).await {
                Ok(r) if r.status == StatusCode::OK => break,
                Ok(r) => format!("{}: {}", r.status, r.text()),
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "node {id} never became healthy (last: {last}); its log:\n{}",
                c.log_tail(id)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Waits until every node in `ids` reports the same leader, which is one of `ids`. The deadline
/// is generous: on a loaded 2-core machine, restarted nodes can take a while to rejoin.
pub async fn wait_leader(c: &Cluster, ids: &[u64]) -> u64 {
    wait_for("a leader agreed by all running nodes", Duration::from_secs(60), || async {
        let mut leader = None;
        for id in ids {
            let st = status(c, *id).await?;
            let l = st["leader_id"].as_u64()?;
            if leader.is_some_and(|x| x != l) {
                return None;
            }
            leader = Some(l);
        }
        leader.filter(|l| ids.contains(l))
    })
    .await
}

pub async fn resp(c: &Cluster, id: u64) -> RespClient {
    let addr = c.resp_addr(id);
    wait_for("RESP connection", Duration::from_secs(20), || {
        let addr = addr.clone();
        async move { RespClient::connect(addr).await.ok() }
    })
    .await
    .with_read_timeout(Duration::from_secs(15))
}

pub async fn cmd(cl: &mut RespClient, args: &[&str]) -> Value {
    cl.cmd_str(args).await.expect("RESP call failed")
}

pub fn bulk(v: &Value) -> Option<String> {
    match v {
        Value::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// A real `redis-server` on a free loopback port (no persistence), for differential tests;
/// killed when dropped. `.ci/run` installs it; a test fails loudly when it is missing.
pub struct RedisServer(Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a [`RedisServer`]; returns it and its `127.0.0.1:PORT` (it may not accept yet:
/// connect with [`resp_connect`]).
pub fn start_redis() -> (RedisServer, String) {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed for this test (apt-get install redis-server)");
    (RedisServer(child), format!("127.0.0.1:{port}"))
}

/// A RESP connection to `addr`, retried until the server accepts (20 s deadline), with a 15 s
/// read timeout.
pub async fn resp_connect(addr: &str) -> RespClient {
    let addr = addr.to_string();
    wait_for("a RESP connection", Duration::from_secs(20), || {
        let addr = addr.clone();
        async move { RespClient::connect(addr).await.ok() }
    })
    .await
    .with_read_timeout(Duration::from_secs(15))
}

/// A counter or gauge from node `id`'s `/metrics`.
pub async fn metric(c: &Cluster, id: u64, name: &str) -> u64 {
    let url = format!("{}/metrics", c.http(id));
    let body = wait_for("/metrics", Duration::from_secs(20), || async {
        http_request(Method::GET, &url, "", Duration::from_secs(2)).await.ok().map(|r| r.text())
    })
    .await;
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{body}"))
        .trim()
        .parse()
        .unwrap()
}
