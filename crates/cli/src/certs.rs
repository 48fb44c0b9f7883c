//! `rampart certs`: a development CA, peer certificates for nodes, and a server certificate
//! for client listeners, as PEM files in one directory. Files that exist are kept (so a
//! second run, or `rampart up --tls` on an existing data dir, changes nothing, and a run with
//! new node ids adds their certificates under the same CA). Keys are written mode 0600.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rampart_tls::dev::{CertPem, DevCa};

/// Names the client-listener server certificate carries by default.
pub const DEFAULT_SERVER_NAMES: &str = "localhost,127.0.0.1,::1";

#[derive(clap::Args, Debug)]
pub struct CertsArgs {
    /// Directory for the files (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Node ids to make peer certificates for, e.g. `1,2,3`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<u64>,
    /// DNS names and IP addresses of the server certificate for client listeners.
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_SERVER_NAMES)]
    pub server_names: Vec<String>,
}

/// The files of one certificate and its key.
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where `rampart certs` puts everything in `dir`.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn ca(&self) -> Pair {
        self.pair("ca")
    }
    pub fn node(&self, id: u64) -> Pair {
        self.pair(&format!("node-{id}"))
    }
    pub fn server(&self) -> Pair {
        self.pair("server")
    }
    fn pair(&self, stem: &str) -> Pair {
        Pair { cert: self.dir.join(format!("{stem}.pem")), key: self.dir.join(format!("{stem}-key.pem")) }
    }
    /// The `rampart server` flags that give node `id` peer TLS.
    pub fn node_flags(&self, id: u64) -> Vec<String> {
        let n = self.node(id);
        vec![
            "--peer-tls-ca".into(),
            self.ca().cert.display().to_string(),
            "--peer-tls-cert".into(),
            n.cert.display().to_string(),
            "--peer-tls-key".into(),
            n.key.display().to_string(),
        ]
    }
}

impl Layout {
    /// The `rampart server` flags that give a node's client listeners TLS with the dev
    /// server certificate.
    pub fn client_flags(&self) -> Vec<String> {
        let s = self.server();
        vec!["--tls-cert".into(), s.cert.display().to_string(), "--tls-key".into(), s.key.display().to_string()]
    }
}

/// True if both files exist, false if neither; an error if only one does.
fn exists(p: &Pair) -> anyhow::Result<bool> {
    match (p.cert.exists(), p.key.exists()) {
        (true, true) => Ok(true),
        (false, false) => Ok(false),
        (true, false) => {
            bail!("{} exists without its key {}; remove it or restore the key", p.cert.display(), p.key.display())
        }
        (false, true) => bail!(
            "{} exists without its certificate {}; remove it or restore the certificate",
            p.key.display(),
            p.cert.display()
        ),
    }
}

fn write_new(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).with_context(|| format!("cannot write {}", path.display()))
}

fn write_pair(p: &Pair, pem: &CertPem) -> anyhow::Result<()> {
    write_new(&p.key, &pem.key, 0o600)?;
    write_new(&p.cert, &pem.cert, 0o644)
}

/// What [`ensure`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub created: Vec<PathBuf>,
    pub kept: Vec<PathBuf>,
}

/// Makes whatever of the CA, the node certificates and the server certificate is missing in
/// `dir`, and checks every node's files load as that node's peer TLS.
pub fn ensure(dir: &Path, nodes: &[u64], server_names: &[String]) -> anyhow::Result<Report> {
    if nodes.is_empty() {
        bail!("--nodes names no node");
    }
    if let Some(bad) = nodes.iter().find(|id| **id == 0) {
        bail!("node id {bad} is not allowed (ids are positive)");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let layout = Layout { dir: dir.to_path_buf() };
    let mut report = Report::default();
    let ca_files = layout.ca();
    let ca = if exists(&ca_files)? {
        let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()));
        report.kept.push(ca_files.cert.clone());
        DevCa::from_pem(&read(&ca_files.cert)?, &read(&ca_files.key)?)?
    } else {
        let ca = DevCa::generate()?;
        write_pair(&ca_files, ca.pem())?;
        report.created.push(ca_files.cert.clone());
        ca
    };
    let mut ids = nodes.to_vec();
    ids.sort_unstable();
    ids.dedup();
    for id in &ids {
        let files = layout.node(*id);
        if exists(&files)? {
            report.kept.push(files.cert.clone());
        } else {
            write_pair(&files, &ca.node_cert(*id)?)?;
            report.created.push(files.cert.clone());
        }
        let tls = rampart_tls::PeerTls::from_files(&ca_files.cert, &files.cert, &files.key).with_context(|| {
            format!(
                "{} does not work with {} (was ca.pem made with ca-key.pem by rampart certs?)",
                files.cert.display(),
                ca_files.cert.display()
            )
        })?;
        if tls.node_id() != *id {
            bail!("{} names node {}, not node {id}", files.cert.display(), tls.node_id());
        }
    }
    let server = layout.server();
    if exists(&server)? {
        report.kept.push(server.cert.clone());
    } else {
        let names: Vec<&str> = server_names.iter().map(String::as_str).filter(|n| !n.is_empty()).collect();
        if names.is_empty() {
            bail!("--server-names names nothing");
        }
        write_pair(&server, &ca.server_cert(&names)?)?;
        report.created.push(server.cert.clone());
    }
    Ok(report)
}

pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    let report = ensure(&args.out, &args.nodes, &args.server_names)?;
    for p in &report.created {
        println!("created {} (and its -key.pem)", p.display());
    }
    for p in &report.kept {
        println!("kept existing {}", p.display());
    }
    let layout = Layout { dir: args.out.clone() };
    println!("\nstart each node with its peer TLS flags, for example node {}:", args.nodes[0]);
    println!("  rampart server --id {} {} ...", args.nodes[0], layout.node_flags(args.nodes[0]).join(" "));
    println!("ca-key.pem can issue certificates trusted by every node: keep it off the nodes in production.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_run_keeps_everything_and_new_nodes_join_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let first = ensure(dir.path(), &[1, 2, 3], &names).unwrap();
        assert_eq!(first.created.len(), 5, "{first:?}");
        let again = ensure(dir.path(), &[3, 2, 1], &names).unwrap();
        assert!(again.created.is_empty(), "{again:?}");
        let more = ensure(dir.path(), &[4], &names).unwrap();
        assert_eq!(more.created, vec![dir.path().join("node-4.pem")]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("node-4-key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let l = Layout { dir: dir.path().to_path_buf() };
        let cfg = rampart_tls::load_server_config(&l.server().cert, &l.server().key);
        assert!(cfg.is_ok(), "the server certificate loads");
    }

    #[test]
    fn half_pairs_zero_ids_and_a_foreign_ca_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string()];
        assert!(ensure(dir.path(), &[0], &names).unwrap_err().to_string().contains("node id 0"));
        ensure(dir.path(), &[1], &names).unwrap();
        std::fs::remove_file(dir.path().join("node-1-key.pem")).unwrap();
        let e = ensure(dir.path(), &[1], &names).unwrap_err().to_string();
        assert!(e.contains("node-1.pem exists without its key"), "{e}");
        // A ca.pem that ca-key.pem did not make: certificates issued now would not chain.
        let other = tempfile::tempdir().unwrap();
        ensure(other.path(), &[1], &names).unwrap();
        std::fs::copy(other.path().join("ca-key.pem"), dir.path().join("ca-key.pem")).unwrap();
        let e = format!("{:#}", ensure(dir.path(), &[2], &names).unwrap_err());
        assert!(e.contains("does not work with"), "{e}");
    }
}
