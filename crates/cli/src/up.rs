//! `rampart up`: a local three-node cluster (plus a load balancer in front of
//! it) as child processes on loopback, for a first run. Ctrl-C stops them all.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rampart_resp::client::RespClient;
use rampart_resp::Value;
use tokio::process::{Child, Command};

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Where the nodes keep their data (one folder per node) and logs.
    #[arg(long, default_value = "./rampart-data")]
    pub data_dir: PathBuf,
    /// Replication mode of the nodes.
    #[arg(long, default_value = "leader")]
    pub replication: String,
    /// Seconds to wait for the cluster to elect a leader.
    #[arg(long, default_value_t = 30)]
    pub ready_timeout_s: u64,
    /// Use 31 ports from this one instead of the defaults: load balancer RESP
    /// BASE and HTTP BASE+10, admin BASE+30; node N: RESP BASE+N, HTTP
    /// BASE+10+N, peer BASE+20+N.
    #[arg(long)]
    pub base_port: Option<u16>,
    /// TLS everywhere: makes a dev CA and certificates under DATA_DIR/certs
    /// (kept across runs); the nodes authenticate each other with mutual TLS,
    /// and the nodes' and the balancer's RESP and HTTP listeners serve TLS
    /// (`redis-cli --tls --cacert DATA_DIR/certs/ca.pem`, `curl --cacert …`).
    #[arg(long)]
    pub tls: bool,
}

const NODES: u64 = 3;

pub(crate) struct NodePorts {
    pub id: u64,
    pub peer: String,
    pub resp: String,
    pub http: String,
}

/// Where everything `up` starts listens.
pub(crate) struct Layout {
    pub nodes: Vec<NodePorts>,
    pub lb_resp: String,
    pub lb_http: String,
    pub lb_admin: String,
}

impl Layout {
    /// The documented defaults: nodes on 6381-6383 (RESP), 8001-8003 (HTTP),
    /// 7001-7003 (peers); the load balancer on 6380 and 8000, admin 8100.
    pub fn standard() -> Layout {
        Layout {
            nodes: (1..=NODES)
                .map(|i| NodePorts {
                    id: i,
                    peer: format!("127.0.0.1:{}", 7000 + i),
                    resp: format!("127.0.0.1:{}", 6380 + i),
                    http: format!("127.0.0.1:{}", 8000 + i),
                })
                .collect(),
            lb_resp: "127.0.0.1:6380".into(),
            lb_http: "127.0.0.1:8000".into(),
            lb_admin: "127.0.0.1:8100".into(),
        }
    }

    pub fn from_base(base: u16) -> anyhow::Result<Layout> {
        let b = u32::from(base);
        if b + 30 > u32::from(u16::MAX) || base == 0 {
            bail!("--base-port {base} leaves no room for the 31 ports it needs");
        }
        let a = |p: u32| format!("127.0.0.1:{p}");
        Ok(Layout {
            nodes: (1..=NODES)
                .map(|i| {
                    let n = i as u32;
                    NodePorts { id: i, peer: a(b + 20 + n), resp: a(b + n), http: a(b + 10 + n) }
                })
                .collect(),
            lb_resp: a(b),
            lb_http: a(b + 10),
            lb_admin: a(b + 30),
        })
    }
}

struct Procs {
    children: Vec<(String, Child, PathBuf)>,
}

impl Procs {
    /// SIGTERM to every child, then SIGKILL to those still running after 10 s.
    async fn stop(&mut self) {
        for (_, c, _) in &self.children {
            if let Some(pid) = c.id() {
                // SAFETY: kill(2) on a pid we spawned and have not yet reaped.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGTERM);
                }
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        for (name, c, _) in &mut self.children {
            match tokio::time::timeout_at(deadline, c.wait()).await {
                Ok(_) => {}
                Err(_) => {
                    eprintln!("{name} did not stop within 10 s; killing it");
                    let _ = c.kill().await;
                }
            }
        }
    }
}

fn tail(path: &PathBuf) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: UpArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the rampart executable")?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data dir {}", args.data_dir.display()))?;
    let layout = match args.base_port {
        Some(b) => Layout::from_base(b)?,
        None => Layout::standard(),
    };
    let ports = &layout.nodes;
    let cluster: Vec<String> = ports.iter().map(|p| format!("{}={}", p.id, p.peer)).collect();
    let cluster = cluster.join(",");
    let certs = match args.tls {
        false => None,
        true => Some(peer_certs(&args, ports)?),
    };
    let mut procs = Procs { children: Vec::new() };
    for p in ports {
        let log = args.data_dir.join(format!("node{}.log", p.id));
        let out = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        let mut child = Command::new(&exe);
        child
            .arg("server")
            .args(["--id", &p.id.to_string()])
            .arg("--data-dir")
            .arg(args.data_dir.join(format!("n{}", p.id)))
            .args(["--peer-addr", &p.peer, "--resp-addr", &p.resp, "--http-addr", &p.http])
            .args(["--initial-cluster", &cluster, "--replication", &args.replication])
            .args(certs.as_ref().map(|c| c.node_flags(p.id)).unwrap_or_default())
            .args(certs.as_ref().map(|c| c.client_flags()).unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        die_with_parent(&mut child);
        let child = child.spawn().with_context(|| format!("cannot start node {}", p.id))?;
        procs.children.push((format!("node {}", p.id), child, log));
    }
    let lb = crate::uplb::start(&exe, &args.data_dir, &layout, args.replication == "multi-master", certs.as_ref())?;
    let lb_desc = lb.as_ref().map(|l| l.describe());
    if let Some(l) = lb {
        procs.children.push((l.name.clone(), l.child, l.log));
    }

    let result = tokio::select! {
        r = wait_ready(&args, ports, &mut procs, certs.as_ref()) => r,
        _ = rampart_server::wait_for_signal() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Err(e) = result {
        procs.stop().await;
        return Err(e);
    }
    if let Some(d) = lb_desc {
        println!("{d}");
    }
    if let Some(c) = &certs {
        println!("peer TLS on: nodes authenticate each other with certificates in {}", c.dir.display());
        println!(
            "client TLS on: redis-cli --tls --cacert {ca} -p <RESP port>; curl --cacert {ca} https://localhost:<HTTP port>/v1/status",
            ca = c.ca().cert.display()
        );
    }
    println!("cluster ready; data in {}; press Ctrl-C to stop", args.data_dir.display());

    // Run until Ctrl-C or a child dies.
    loop {
        tokio::select! {
            _ = rampart_server::wait_for_signal() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                for (name, c, log) in &mut procs.children {
                    if let Ok(Some(status)) = c.try_wait() {
                        eprintln!("{name} exited ({status}); last lines of {}:\n{}", log.display(), tail(log));
                    }
                }
                procs.children.retain_mut(|(_, c, _)| !matches!(c.try_wait(), Ok(Some(_))));
                if procs.children.is_empty() {
                    bail!("every process exited");
                }
            }
        }
    }
    println!("stopping...");
    procs.stop().await;
    println!("stopped");
    Ok(())
}

/// The dev CA and node certificates of `up --tls`, made under the data dir on first use.
fn peer_certs(args: &UpArgs, ports: &[NodePorts]) -> anyhow::Result<crate::certs::Layout> {
    let dir = args.data_dir.join("certs");
    let ids: Vec<u64> = ports.iter().map(|p| p.id).collect();
    let names: Vec<String> = crate::certs::DEFAULT_SERVER_NAMES.split(',').map(String::from).collect();
    let report = crate::certs::ensure(&dir, &ids, &names).context("cannot set up peer TLS certificates")?;
    if !report.created.is_empty() {
        println!("made a development CA and certificates in {}", dir.display());
    }
    Ok(crate::certs::Layout { dir })
}

/// Waits until every node answers and one reports itself leader, then prints
/// one line per node.
async fn wait_ready(
    args: &UpArgs,
    ports: &[NodePorts],
    procs: &mut Procs,
    certs: Option<&crate::certs::Layout>,
) -> anyhow::Result<()> {
    let tls = match certs {
        None => None,
        Some(c) => Some(rampart_tls::load_client_config(&c.ca().cert).context("the dev CA of up --tls")?),
    };
    let deadline = Instant::now() + Duration::from_secs(args.ready_timeout_s);
    let mut roles: Vec<Option<String>> = vec![None; ports.len()];
    loop {
        for (name, c, log) in &mut procs.children {
            if let Ok(Some(status)) = c.try_wait() {
                bail!("{name} exited during start-up ({status}); last lines of {}:\n{}", log.display(), tail(log));
            }
        }
        for (i, p) in ports.iter().enumerate() {
            roles[i] = match &tls {
                None => node_role(&p.resp).await,
                Some(tls) => node_role_https(&p.http, tls.clone()).await,
            };
        }
        let leader = roles.iter().any(|r| r.as_deref() == Some("leader"));
        let multi = args.replication == "multi-master";
        if roles.iter().all(|r| r.is_some()) && (leader || multi) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "cluster not ready after {} s (roles: {roles:?}); see the logs in {}",
                args.ready_timeout_s,
                args.data_dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (i, p) in ports.iter().enumerate() {
        println!(
            "node {} ready: RESP {}{}  HTTP {}://{}  role {}  (log {})",
            p.id,
            p.resp,
            if tls.is_some() { " (TLS)" } else { "" },
            if tls.is_some() { "https" } else { "http" },
            p.http,
            roles[i].as_deref().unwrap_or("?"),
            args.data_dir.join(format!("node{}.log", p.id)).display()
        );
    }
    Ok(())
}

/// The node's raft role from `INFO rampart` (`peer (multi-master)` in that
/// mode), or None if it does not answer.
async fn node_role(resp_addr: &str) -> Option<String> {
    let fut = async {
        let mut c = RespClient::connect(resp_addr).await.ok()?;
        let v = c.cmd_str(&["INFO", "rampart"]).await.ok()?;
        let text = match v {
            Value::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
            Value::Verbatim(s) => s,
            _ => return None,
        };
        if text.lines().any(|l| l.trim() == "replication_mode:multi-master") {
            return Some("peer (multi-master)".to_string());
        }
        text.lines().find_map(|l| l.strip_prefix("role:")).map(|r| r.trim().to_string())
    };
    tokio::time::timeout(Duration::from_secs(1), fut).await.ok().flatten()
}

/// The node's role from `GET /v1/status` over HTTPS (`up --tls`), or None if it does not answer.
async fn node_role_https(http_addr: &str, tls: std::sync::Arc<rampart_tls::rustls::ClientConfig>) -> Option<String> {
    let client = rampart_client::Client::with_tls(vec![http_addr.to_string()], Duration::from_secs(1), tls).ok()?;
    let status = client.status().await.ok()?;
    Some(if status.role == "peer" { "peer (multi-master)".to_string() } else { status.role })
}

/// Makes the child get SIGTERM if `rampart up` itself dies (even by SIGKILL),
/// so no node outlives it.
pub(crate) fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; the closure touches no other state.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
