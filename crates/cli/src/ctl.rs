//! `rampart kv` and `rampart cluster`: command-line clients of a running
//! cluster's HTTP API, built on `rampart-client`.
//!
//! Output is for people by default (aligned tables, escaped bytes) and for
//! scripts with `--json` (the API's own JSON shapes). `kv get` writes the
//! value's raw bytes. Every failure ends in a non-zero exit and a message on
//! stderr; this module talks to nodes only over HTTP.

use std::future::Future;
use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use rampart_client::{Client, Consistency, Deleted, Entry, Item, Member, NewMember, ScanPage, Status};
use serde_json::json;

/// HTTP addresses of the three nodes `rampart up` starts.
pub const DEFAULT_ENDPOINTS: &str = "127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003";

/// Most bytes `kv put KEY` (no VALUE) reads from standard input.
const STDIN_VALUE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Values longer than this many characters are shortened in tables.
const TABLE_VALUE_CHARS_MAX: usize = 80;

/// How to reach the cluster and how to print; shared by `kv` and `cluster`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub(crate) struct Connection {
    /// HTTP addresses of cluster nodes, comma separated, tried in order
    /// (host:port or http://host:port).
    #[arg(long, global = true, value_delimiter = ',', default_value = DEFAULT_ENDPOINTS, env = "RAMPART_ENDPOINTS")]
    endpoints: Vec<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Give up on a node after this many milliseconds (then try the next,
    /// unless a write may already have been applied).
    #[arg(long, global = true, default_value_t = 5000, value_name = "MS")]
    timeout_ms: u64,
    /// Talk HTTPS to the nodes and check their certificates against this CA
    /// (PEM); bare host:port endpoints then mean https://host:port.
    #[arg(long, global = true, value_name = "PEM", env = "RAMPART_CACERT")]
    cacert: Option<std::path::PathBuf>,
    /// Bearer token for a cluster with authentication (from `POST /v1/auth/tokens`).
    #[arg(long, global = true, env = "RAMPART_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl Connection {
    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        let endpoints: Vec<String> =
            self.endpoints.iter().map(|e| e.trim().to_owned()).filter(|e| !e.is_empty()).collect();
        let timeout = Duration::from_millis(self.timeout_ms);
        let client = match &self.cacert {
            None => Client::new(endpoints, timeout).context("bad --endpoints")?,
            Some(ca) => {
                let tls = rampart_tls::load_client_config(ca).context("bad --cacert")?;
                Client::with_tls(endpoints, timeout, tls).context("bad --endpoints")?
            }
        };
        match &self.token {
            Some(t) => client.with_bearer_token(t).context("bad --token"),
            None => Ok(client),
        }
    }
}

/// `rampart kv`: read and write keys.
#[derive(Args, Debug)]
pub struct KvArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    cmd: KvCommand,
}

#[derive(Subcommand, Debug, PartialEq, Eq)]
enum KvCommand {
    /// Print a key's value, as raw bytes.
    Get {
        /// The key.
        key: String,
        /// Read from the first node that answers, without checking it is up to date.
        #[arg(long)]
        stale: bool,
    },
    /// Set a key's value.
    Put {
        /// The key.
        key: String,
        /// The value. Without it, the raw bytes of standard input are stored.
        #[arg(allow_hyphen_values = true)]
        value: Option<String>,
        /// Write only if the key's revision is REV (0: only if the key does not exist).
        #[arg(long, value_name = "REV")]
        cas: Option<u64>,
        /// The key expires this many milliseconds after the write (as `SET ... PX MS`); without
        /// it the write clears any expiry.
        #[arg(long, value_name = "MS", conflicts_with = "cas")]
        ttl_ms: Option<u64>,
    },
    /// Delete a key.
    #[command(visible_alias = "delete")]
    Del {
        /// The key.
        key: String,
    },
    /// List keys starting with PREFIX (all keys without one), in order.
    Scan {
        /// Only keys starting with this.
        #[arg(default_value = "")]
        prefix: String,
        /// Most keys to list (the server may cap it).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
        limit: u64,
        /// Read from the first node that answers, without checking it is up to date.
        #[arg(long)]
        stale: bool,
    },
}

/// `rampart cluster`: inspect and change membership.
#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    cmd: ClusterCommand,
}

#[derive(Subcommand, Debug, PartialEq, Eq)]
enum ClusterCommand {
    /// Ask every endpoint for its role, term and log position.
    Status,
    /// List the cluster's members.
    Members,
    /// Add a node (it must already be running).
    Add { id: u64, peer_addr: String, resp_addr: String, http_addr: String },
    /// Remove a node.
    Remove { id: u64 },
    /// Multi-master mode: give member ID's place to the node now running at its address with an
    /// empty data dir (its data was lost); it catches up from a quorum.
    Replace { id: u64 },
}

pub fn run_kv(args: KvArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let json = args.conn.json;
    let mut out = std::io::stdout().lock();
    match args.cmd {
        KvCommand::Get { key, stale } => {
            let consistency = if stale { Consistency::Stale } else { Consistency::Linearizable };
            let Some(entry) = block_on(client.get_with(&key, consistency))? else {
                bail!("key {key:?} not found");
            };
            if json {
                writeln!(out, "{}", render_entry_json(&key, entry))?;
            } else {
                out.write_all(&entry.value)?;
                // Keep the shell prompt off the value's last line, but
                // never alter bytes going to a pipe or file.
                if std::io::stdout().is_terminal() && !entry.value.ends_with(b"\n") {
                    writeln!(out)?;
                }
            }
        }
        KvCommand::Put { key, value, cas, ttl_ms } => {
            let value = match value {
                Some(v) => v.into_bytes(),
                None => read_bounded(std::io::stdin().lock(), STDIN_VALUE_BYTES_MAX)
                    .context("reading the value from standard input")?,
            };
            let revision = match (cas, ttl_ms) {
                (Some(rev), _) => block_on(client.put_cas(&key, &value, rev))?,
                (None, Some(ms)) => block_on(client.put_with_ttl(&key, &value, ms))?,
                (None, None) => block_on(client.put(&key, &value))?,
            };
            write!(out, "{}", render_put(revision, json))?;
        }
        KvCommand::Del { key } => {
            let deleted = block_on(client.delete(&key))?;
            write!(out, "{}", render_delete(&key, deleted, json))?;
        }
        KvCommand::Scan { prefix, limit, stale } => {
            let consistency = if stale { Consistency::Stale } else { Consistency::Linearizable };
            let page = block_on(client.scan_with(&prefix, usize::try_from(limit).unwrap_or(usize::MAX), consistency))?;
            write!(out, "{}", render_scan(&page, json))?;
        }
    }
    out.flush()?;
    Ok(())
}

/// How long `rampart cluster add/remove/replace` waits: a change may catch up every key.
const MEMBERSHIP_CHANGE_TIMEOUT: Duration = Duration::from_secs(135);

pub fn run_cluster(args: ClusterArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let json = args.conn.json;
    let mut out = std::io::stdout().lock();
    match args.cmd {
        ClusterCommand::Status => {
            let all = runtime()?.block_on(client.status_all());
            write!(out, "{}", render_status(&all, json))?;
            out.flush()?;
            let failed: Vec<String> =
                all.iter().filter_map(|(ep, r)| r.as_ref().err().map(|e| format!("{ep}: {}", node_error(e)))).collect();
            if !failed.is_empty() {
                let hint = if failed.len() == all.len() {
                    "\n(is the cluster running? `rampart up` starts a local one)"
                } else {
                    ""
                };
                bail!("{} of {} nodes did not answer:\n  {}{hint}", failed.len(), all.len(), failed.join("\n  "));
            }
        }
        ClusterCommand::Members => {
            let list = block_on(client.members())?;
            write!(out, "{}", render_members(&list.members, list.leader_id, json, true))?;
        }
        ClusterCommand::Add { id, peer_addr, resp_addr, http_addr } => {
            let new = NewMember { id, peer_addr, resp_addr, http_addr };
            let members = block_on(client.with_timeout(MEMBERSHIP_CHANGE_TIMEOUT).add_member(&new))?;
            write!(out, "{}", render_members(&members, None, json, false))?;
        }
        ClusterCommand::Remove { id } => {
            let members = block_on(client.with_timeout(MEMBERSHIP_CHANGE_TIMEOUT).remove_member(id))?;
            write!(out, "{}", render_members(&members, None, json, false))?;
        }
        ClusterCommand::Replace { id } => {
            let members = block_on(client.with_timeout(MEMBERSHIP_CHANGE_TIMEOUT).replace_member(id))?;
            write!(out, "{}", render_members(&members, None, json, false))?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Reads all of `input`, failing rather than buffering more than `max` bytes.
fn read_bounded(input: impl std::io::Read, max: usize) -> anyhow::Result<Vec<u8>> {
    let mut data = Vec::new();
    input.take(max as u64 + 1).read_to_end(&mut data)?;
    if data.len() > max {
        bail!("more than {max} bytes");
    }
    Ok(data)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")
}

/// Runs one client call, adding a hint when no node could be reached.
fn block_on<T>(call: impl Future<Output = Result<T, rampart_client::Error>>) -> anyhow::Result<T> {
    match runtime()?.block_on(call) {
        Ok(v) => Ok(v),
        Err(e @ rampart_client::Error::Unavailable { .. }) => {
            Err(anyhow::Error::new(e)
                .context("cannot reach the cluster (is it running? `rampart up` starts a local one)"))
        }
        Err(e) => Err(e.into()),
    }
}

/// One node's failure without repeating its address.
fn node_error(e: &rampart_client::Error) -> String {
    match e {
        rampart_client::Error::Unavailable { attempts } if attempts.len() == 1 => attempts[0].error.clone(),
        other => other.to_string(),
    }
}

fn render_entry_json(key: &str, entry: Entry) -> String {
    let item = Item { key: key.as_bytes().to_vec(), value: entry.value, revision: entry.revision };
    serde_json::to_string(&item).unwrap_or_default()
}

fn render_put(revision: u64, json: bool) -> String {
    if json {
        format!("{}\n", json!({ "revision": revision }))
    } else {
        format!("OK (revision {revision})\n")
    }
}

fn render_delete(key: &str, d: Deleted, json: bool) -> String {
    if json {
        format!("{}\n", json!({ "deleted": d.deleted, "revision": d.revision }))
    } else if d.deleted {
        format!("deleted {key:?} (revision {})\n", d.revision)
    } else {
        format!("{key:?} did not exist (revision {})\n", d.revision)
    }
}

fn render_scan(page: &ScanPage, json: bool) -> String {
    if json {
        return format!("{}\n", serde_json::to_string(page).unwrap_or_default());
    }
    let rows: Vec<Vec<String>> = page
        .items
        .iter()
        .map(|i| vec![printable(&i.key), shorten(&printable(&i.value), TABLE_VALUE_CHARS_MAX), i.revision.to_string()])
        .collect();
    let mut s = format_table(&["KEY", "VALUE", "REVISION"], &rows);
    let n = page.items.len();
    let keys = if n == 1 { "key" } else { "keys" };
    if page.more {
        s.push_str(&format!("({n} {keys} shown; more match: raise --limit or narrow the prefix)\n"));
    } else {
        s.push_str(&format!("({n} {keys})\n"));
    }
    s
}

fn render_status(all: &[(String, Result<Status, rampart_client::Error>)], json: bool) -> String {
    if json {
        let nodes: Vec<serde_json::Value> = all
            .iter()
            .map(|(endpoint, r)| match r {
                Ok(status) => json!({ "endpoint": endpoint, "status": status }),
                Err(e) => json!({ "endpoint": endpoint, "error": e.to_string() }),
            })
            .collect();
        return format!("{}\n", serde_json::Value::Array(nodes));
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|(endpoint, r)| {
            let endpoint = endpoint.strip_prefix("http://").unwrap_or(endpoint).to_owned();
            match r {
                // Multi-master mode has no leader, term or log.
                Ok(s) if s.role == "peer" => {
                    let mut row = vec![endpoint, s.id.to_string(), "peer (multi-master)".into()];
                    row.extend(std::iter::repeat_n("-".to_owned(), 4));
                    row
                }
                Ok(s) => vec![
                    endpoint,
                    s.id.to_string(),
                    s.role.clone(),
                    s.leader_id.map_or_else(|| "-".to_owned(), |l| l.to_string()),
                    s.term.to_string(),
                    s.commit_index.to_string(),
                    s.applied_index.to_string(),
                ],
                Err(_) => {
                    let mut row = vec![endpoint, "-".into(), "unreachable".into()];
                    row.extend(std::iter::repeat_n("-".to_owned(), 4));
                    row
                }
            }
        })
        .collect();
    format_table(&["ENDPOINT", "ID", "ROLE", "LEADER", "TERM", "COMMIT", "APPLIED"], &rows)
}

fn render_members(members: &[Member], leader_id: Option<u64>, json: bool, with_leader: bool) -> String {
    if json {
        let body = if with_leader {
            json!({ "leader_id": leader_id, "members": members })
        } else {
            json!({ "members": members })
        };
        return format!("{body}\n");
    }
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            let role = if with_leader && leader_id == Some(m.id) {
                "leader"
            } else if m.voter {
                "voter"
            } else {
                "learner"
            };
            // Failure-detector view of the node answering (absent for itself).
            let extra = |k: &str| m.extra.get(k).filter(|v| !v.is_null());
            let state = extra("state").and_then(|v| v.as_str()).unwrap_or("-").to_owned();
            let phi = extra("phi").and_then(|v| v.as_f64()).map_or("-".to_owned(), |p| format!("{p:.1}"));
            let last = extra("since_last_heartbeat_ms")
                .and_then(|v| v.as_u64())
                .map_or("-".to_owned(), |ms| format!("{ms}ms"));
            let rtt = extra("rtt_ms").and_then(|v| v.as_f64()).map_or("-".to_owned(), |r| format!("{r:.1}ms"));
            vec![
                m.id.to_string(),
                role.to_owned(),
                state,
                phi,
                last,
                rtt,
                m.peer_addr.clone(),
                m.resp_addr.clone(),
                m.http_addr.clone(),
            ]
        })
        .collect();
    format_table(&["ID", "ROLE", "STATE", "PHI", "LAST_HB", "RTT", "PEER_ADDR", "RESP_ADDR", "HTTP_ADDR"], &rows)
}

/// Left-aligned columns two spaces apart, no trailing spaces.
fn format_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().take(widths.len()) {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = widths[i].saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Bytes as text a terminal shows safely: UTF-8 with control characters
/// escaped, anything else as `\xNN`.
fn printable(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_owned(),
        Ok(s) => s.escape_debug().to_string(),
        Err(_) => bytes.escape_ascii().to_string(),
    }
}

fn shorten(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_owned();
    }
    let mut short: String = s.chars().take(max_chars.saturating_sub(1)).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct TestCli {
        #[command(subcommand)]
        cmd: TestCmd,
    }

    #[derive(Subcommand, Debug)]
    enum TestCmd {
        Kv(KvArgs),
        Cluster(ClusterArgs),
    }

    fn kv(args: &[&str]) -> KvArgs {
        let cli = TestCli::try_parse_from(
            std::iter::once("rampart").chain(std::iter::once("kv")).chain(args.iter().copied()),
        )
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        match cli.cmd {
            TestCmd::Kv(a) => a,
            TestCmd::Cluster(_) => unreachable!(),
        }
    }

    fn cluster(args: &[&str]) -> Result<ClusterArgs, clap::Error> {
        let cli = TestCli::try_parse_from(
            std::iter::once("rampart").chain(std::iter::once("cluster")).chain(args.iter().copied()),
        )?;
        match cli.cmd {
            TestCmd::Cluster(a) => Ok(a),
            TestCmd::Kv(_) => unreachable!(),
        }
    }

    #[test]
    fn defaults() {
        let a = kv(&["get", "k"]);
        assert_eq!(a.conn.endpoints, vec!["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"]);
        assert!(!a.conn.json);
        assert_eq!(a.conn.timeout_ms, 5000);
        assert_eq!(a.cmd, KvCommand::Get { key: "k".into(), stale: false });
    }

    #[test]
    fn global_flags_go_before_or_after_the_subcommand() {
        let a = kv(&["--endpoints", "a:1,http://b:2", "put", "k", "v", "--json"]);
        assert_eq!(a.conn.endpoints, vec!["a:1", "http://b:2"]);
        assert!(a.conn.json);
        let b = kv(&["scan", "--endpoints=c:3", "--timeout-ms", "250"]);
        assert_eq!(b.conn.endpoints, vec!["c:3"]);
        assert_eq!(b.conn.timeout_ms, 250);
    }

    #[test]
    fn kv_commands_parse() {
        assert_eq!(
            kv(&["put", "k", "-1", "--cas", "7"]).cmd,
            KvCommand::Put { key: "k".into(), value: Some("-1".into()), cas: Some(7), ttl_ms: None }
        );
        assert_eq!(
            kv(&["put", "k", ""]).cmd,
            KvCommand::Put { key: "k".into(), value: Some("".into()), cas: None, ttl_ms: None }
        );
        assert_eq!(kv(&["put", "k"]).cmd, KvCommand::Put { key: "k".into(), value: None, cas: None, ttl_ms: None });
        assert_eq!(
            kv(&["put", "k", "v", "--ttl-ms", "1500"]).cmd,
            KvCommand::Put { key: "k".into(), value: Some("v".into()), cas: None, ttl_ms: Some(1500) }
        );
        assert_eq!(kv(&["del", "k"]).cmd, KvCommand::Del { key: "k".into() });
        assert_eq!(kv(&["delete", "k"]).cmd, KvCommand::Del { key: "k".into() });
        assert_eq!(kv(&["scan"]).cmd, KvCommand::Scan { prefix: "".into(), limit: 100, stale: false });
        assert_eq!(
            kv(&["scan", "user/", "--limit", "5", "--stale"]).cmd,
            KvCommand::Scan { prefix: "user/".into(), limit: 5, stale: true }
        );
        assert_eq!(kv(&["get", "k", "--stale"]).cmd, KvCommand::Get { key: "k".into(), stale: true });
    }

    #[test]
    fn bad_kv_arguments_are_rejected() {
        for args in [
            &["put"][..],
            &["get"],
            &["put", "k", "v", "extra"],
            &["put", "k", "v", "--cas", "x"],
            &["scan", "--limit", "-1"],
            &["scan", "--limit", "0"],
            &["frob"],
        ] {
            let argv = std::iter::once("rampart").chain(std::iter::once("kv")).chain(args.iter().copied());
            assert!(TestCli::try_parse_from(argv).is_err(), "{args:?}");
        }
    }

    #[test]
    fn cluster_commands_parse() {
        assert_eq!(cluster(&["status"]).unwrap().cmd, ClusterCommand::Status);
        assert_eq!(cluster(&["members", "--json"]).unwrap().cmd, ClusterCommand::Members);
        assert_eq!(
            cluster(&["add", "4", "127.0.0.1:7004", "127.0.0.1:6004", "127.0.0.1:8004"]).unwrap().cmd,
            ClusterCommand::Add {
                id: 4,
                peer_addr: "127.0.0.1:7004".into(),
                resp_addr: "127.0.0.1:6004".into(),
                http_addr: "127.0.0.1:8004".into()
            }
        );
        assert_eq!(cluster(&["remove", "2"]).unwrap().cmd, ClusterCommand::Remove { id: 2 });
        assert!(cluster(&["remove", "two"]).is_err());
        assert!(cluster(&["add", "4", "a"]).is_err());
    }

    #[test]
    fn table_aligns_columns() {
        let rows = vec![
            vec!["1".to_owned(), "leader".to_owned(), "x".to_owned()],
            vec!["22".to_owned(), "f".to_owned(), "".to_owned()],
        ];
        assert_eq!(format_table(&["ID", "ROLE", "Z"], &rows), "ID  ROLE    Z\n1   leader  x\n22  f\n");
        assert_eq!(format_table(&["A", "B"], &[]), "A  B\n");
        // Width counts characters, not bytes.
        let rows = vec![vec!["é".to_owned(), "x".to_owned()]];
        assert_eq!(format_table(&["AB", "C"], &rows), "AB  C\né   x\n");
    }

    fn status(id: u64, role: &str, leader: Option<u64>) -> Status {
        Status {
            id,
            role: role.into(),
            leader_id: leader,
            term: 3,
            commit_index: 120,
            applied_index: 119,
            members: vec![],
            extra: Default::default(),
        }
    }

    #[test]
    fn status_table() {
        let all = vec![
            ("http://127.0.0.1:8001".to_owned(), Ok(status(1, "leader", Some(1)))),
            ("http://127.0.0.1:8002".to_owned(), Ok(status(2, "candidate", None))),
            ("http://127.0.0.1:8003".to_owned(), Err(rampart_client::Error::Unavailable { attempts: vec![] })),
        ];
        let expected = "\
ENDPOINT        ID  ROLE         LEADER  TERM  COMMIT  APPLIED
127.0.0.1:8001  1   leader       1       3     120     119
127.0.0.1:8002  2   candidate    -       3     120     119
127.0.0.1:8003  -   unreachable  -       -     -       -
";
        assert_eq!(render_status(&all, false), expected);
        let parsed: serde_json::Value = serde_json::from_str(&render_status(&all, true)).unwrap();
        assert_eq!(parsed[0]["status"]["role"], "leader");
        assert_eq!(parsed[0]["endpoint"], "http://127.0.0.1:8001");
        assert!(parsed[2]["error"].is_string());
    }

    fn member(id: u64, voter: bool) -> Member {
        Member {
            id,
            peer_addr: format!("127.0.0.1:700{id}"),
            resp_addr: format!("127.0.0.1:600{id}"),
            http_addr: format!("127.0.0.1:800{id}"),
            voter,
            extra: Default::default(),
        }
    }

    #[test]
    fn members_table() {
        let mut members = vec![member(1, true), member(2, true), member(4, false)];
        for (k, v) in [
            ("state", serde_json::json!("alive")),
            ("phi", serde_json::json!(0.42)),
            ("since_last_heartbeat_ms", serde_json::json!(80)),
            ("rtt_ms", serde_json::json!(0.5)),
        ] {
            members[0].extra.insert(k.into(), v);
        }
        members[1].extra.insert("state".into(), serde_json::json!("self"));
        let expected = "\
ID  ROLE     STATE  PHI  LAST_HB  RTT    PEER_ADDR       RESP_ADDR       HTTP_ADDR
1   voter    alive  0.4  80ms     0.5ms  127.0.0.1:7001  127.0.0.1:6001  127.0.0.1:8001
2   leader   self   -    -        -      127.0.0.1:7002  127.0.0.1:6002  127.0.0.1:8002
4   learner  -      -    -        -      127.0.0.1:7004  127.0.0.1:6004  127.0.0.1:8004
";
        assert_eq!(render_members(&members, Some(2), false, true), expected);
        let parsed: serde_json::Value = serde_json::from_str(&render_members(&members, Some(2), true, true)).unwrap();
        assert_eq!(parsed["leader_id"], 2);
        assert_eq!(parsed["members"][2]["voter"], false);
        let parsed: serde_json::Value = serde_json::from_str(&render_members(&members, None, true, false)).unwrap();
        assert!(parsed.get("leader_id").is_none());
    }

    #[test]
    fn scan_table_escapes_and_shortens() {
        let page = ScanPage {
            items: vec![
                Item { key: b"a".to_vec(), value: b"line\nbreak".to_vec(), revision: 4 },
                Item { key: vec![0xff, b'k'], value: "x".repeat(100).into_bytes(), revision: 12 },
            ],
            more: true,
        };
        let text = render_scan(&page, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "KEY    VALUE                                                                             REVISION"
        );
        assert!(lines[1].starts_with("a      line\\nbreak  "), "{}", lines[1]);
        assert!(lines[2].starts_with("\\xffk  xxx"), "{}", lines[2]);
        assert!(lines[2].contains("x…  12"), "{}", lines[2]);
        assert!(lines[3].contains("more match"));
        let json: serde_json::Value = serde_json::from_str(&render_scan(&page, true)).unwrap();
        assert_eq!(json["items"][0]["value"], "line\nbreak");
        assert_eq!(json["items"][1]["key_b64"], "/2s=");
        assert_eq!(json["more"], true);
        assert_eq!(render_scan(&ScanPage { items: vec![], more: false }, false), "KEY  VALUE  REVISION\n(0 keys)\n");
    }

    #[test]
    fn small_renderings() {
        assert_eq!(render_put(5, false), "OK (revision 5)\n");
        assert_eq!(render_put(5, true), "{\"revision\":5}\n");
        assert_eq!(render_delete("k", Deleted { deleted: true, revision: 6 }, false), "deleted \"k\" (revision 6)\n");
        assert_eq!(
            render_delete("k", Deleted { deleted: false, revision: 6 }, false),
            "\"k\" did not exist (revision 6)\n"
        );
        assert_eq!(
            render_delete("k", Deleted { deleted: false, revision: 6 }, true),
            "{\"deleted\":false,\"revision\":6}\n"
        );
        assert_eq!(
            render_entry_json("k", Entry { value: b"v".to_vec(), revision: 2 }),
            r#"{"key":"k","value":"v","revision":2}"#
        );
        assert_eq!(
            render_entry_json("k", Entry { value: vec![0xfe], revision: 2 }),
            r#"{"key":"k","value_b64":"/g==","revision":2}"#
        );
    }

    #[test]
    fn node_errors_do_not_repeat_the_address() {
        let one = rampart_client::Error::Unavailable {
            attempts: vec![rampart_client::Attempt {
                endpoint: "http://a:1".into(),
                error: "cannot connect: refused".into(),
            }],
        };
        assert_eq!(node_error(&one), "cannot connect: refused");
        let other = rampart_client::Error::NoEndpoints;
        assert_eq!(node_error(&other), "no endpoints given");
    }

    #[test]
    fn stdin_values_are_bounded() {
        assert_eq!(read_bounded(&b"\x00\xffdata"[..], 6).unwrap(), b"\x00\xffdata");
        assert_eq!(read_bounded(&b""[..], 6).unwrap(), b"");
        let err = read_bounded(&b"1234567"[..], 6).unwrap_err();
        assert_eq!(err.to_string(), "more than 6 bytes");
    }

    #[test]
    fn printable_bytes() {
        assert_eq!(printable(b"plain text"), "plain text");
        assert_eq!(printable("héllo".as_bytes()), "héllo");
        assert_eq!(printable(b"tab\there"), "tab\\there");
        assert_eq!(printable(&[b'a', 0x00, 0xff]), "a\\x00\\xff");
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("abcd", 4), "abcd");
    }

    #[test]
    fn unreachable_cluster_is_a_clear_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = run_kv(kv(&["get", "k", "--endpoints", &addr, "--timeout-ms", "2000"])).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.starts_with("cannot reach the cluster"), "{text}");
        assert!(text.contains(&addr), "{text}");
        let err = run_cluster(cluster(&["members", "--endpoints", "https://x:1"]).unwrap()).unwrap_err();
        assert!(format!("{err:#}").contains("https needs a CA certificate"), "{err:#}");
    }
}
