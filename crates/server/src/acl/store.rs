//! The replicated user store and each node's view of it.
//!
//! Every user is one key of the reserved namespace, `0xFF 0xFE "acl/user/" NAME`, whose value is
//! the user's record ([`StoredUser`], MessagePack). Leader mode replicates it through the Raft
//! log like any key (so snapshots carry it); multi-master mode keeps it in one CASPaxos register
//! per user. Changes are compare-and-set on the whole record ([`rampart_kv::Command::SystemCas`]),
//! retried on conflict, so two admins changing one user at once on two nodes both take effect
//! in some order and neither is lost.
//!
//! Each node keeps the users in memory ([`View`]) and re-reads them (one linearizable scan of the
//! reserved prefix) every `acl_refresh_ms`; a change made on this node is in its view at once,
//! one made elsewhere within that interval. `AUTH`, `HELLO AUTH` and bearer tokens that fail on
//! the view re-read it first (coalesced: at most one read per [`REFRESH_COALESCE`]), so a user
//! or token created on another node works at once. `ACL LIST`, `ACL USERS` and `ACL GETUSER`
//! re-read before answering.
//!
//! When no record exists for `default`, the default user is the node's bootstrap user: Redis's
//! (on, no password, every key and command), or with `--admin-password` the same with that
//! password. Once `ACL SETUSER default ...` runs, the stored record rules on every node.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::RwLock;
use rampart_kv::reserved::RESERVED_PREFIX;
use rampart_kv::{Command, Consistency, KvError, Outcome, Replica};
use serde::{Deserialize, Serialize};

use super::password::{sha256_hex, Argon2Hasher, Busy, Pool};
use super::rules::{check_username, Catalog, Hasher, RuleError, Token, User, DEFAULT_USER, TOKENS_PER_USER_MAX};

/// Where users live: `RESERVED_PREFIX` + this + the user name.
pub const USER_KEY_INFIX: &[u8] = b"acl/user/";
/// Default interval between two re-reads of the users (`--acl-refresh-ms`).
pub const ACL_REFRESH_MS_DEFAULT: u64 = 1_000;
/// Re-reads asked for by failed authentications start at most this often (one in flight, the
/// askers meanwhile join the next).
pub const REFRESH_COALESCE: Duration = Duration::from_millis(100);
/// Most users a cluster holds (the view is in memory on every node).
pub const USERS_MAX: usize = 10_000;
/// Users read per scan page.
const SCAN_PAGE_USERS: usize = 1_000;
/// Most compare-and-set attempts of one change before it gives up (each retry follows a
/// concurrent change of the same user).
pub const CHANGE_ATTEMPTS_MAX: usize = 8;
/// Prefix of every bearer token, so a leaked one is easy to recognise.
pub const TOKEN_PREFIX: &str = "rampart_";

/// The record of one user as stored. Field names are the encoding (MessagePack map): add fields
/// with `#[serde(default)]`, never rename.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredUser {
    #[serde(with = "serde_bytes")]
    name: Vec<u8>,
    enabled: bool,
    nopass: bool,
    passwords: Vec<String>,
    allkeys: bool,
    patterns: Vec<serde_bytes::ByteBuf>,
    /// The command rules as `ACL LIST` describes them; rebuilt into bits on load.
    commands: String,
    #[serde(default)]
    tokens: Vec<StoredToken>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredToken {
    id: String,
    sha256: String,
    created_ms: u64,
}

fn encode(user: &User, catalog: &Catalog) -> Result<Vec<u8>, String> {
    let s = StoredUser {
        name: user.name.clone(),
        enabled: user.enabled,
        nopass: user.nopass,
        passwords: user.passwords.clone(),
        allkeys: user.allkeys,
        patterns: user.patterns.iter().cloned().map(serde_bytes::ByteBuf::from).collect(),
        commands: user.describe_commands(catalog),
        tokens: user
            .tokens
            .iter()
            .map(|t| StoredToken { id: t.id.clone(), sha256: t.digest.clone(), created_ms: t.created_ms })
            .collect(),
    };
    rmp_serde::to_vec_named(&s).map_err(|e| format!("cannot encode user: {e}"))
}

fn decode(bytes: &[u8], catalog: &Catalog) -> Result<User, String> {
    let s: StoredUser = rmp_serde::from_slice(bytes).map_err(|e| format!("malformed user record: {e}"))?;
    let mut u = User {
        name: s.name,
        enabled: s.enabled,
        nopass: s.nopass,
        passwords: s.passwords,
        allkeys: s.allkeys,
        patterns: s.patterns.into_iter().map(serde_bytes::ByteBuf::into_vec).collect(),
        commands: Default::default(),
        named: 0,
        tokens: s.tokens.into_iter().map(|t| Token { id: t.id, digest: t.sha256, created_ms: t.created_ms }).collect(),
    };
    u.set_commands_from(catalog, &s.commands);
    Ok(u)
}

/// The key of user `name`.
pub fn user_key(name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(RESERVED_PREFIX.len() + USER_KEY_INFIX.len() + name.len());
    k.extend_from_slice(RESERVED_PREFIX);
    k.extend_from_slice(USER_KEY_INFIX);
    k.extend_from_slice(name);
    k
}

fn users_prefix() -> Vec<u8> {
    user_key(b"")
}

/// A node's in-memory copy of the users.
#[derive(Debug)]
pub struct View {
    users: BTreeMap<Vec<u8>, Arc<User>>,
    /// Each stored record's bytes (what a compare-and-set expects).
    raw: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Token digest -> user name.
    tokens: HashMap<String, Vec<u8>>,
    bootstrap_default: Arc<User>,
}

impl View {
    fn new(raw: BTreeMap<Vec<u8>, Vec<u8>>, catalog: &Catalog, bootstrap_default: Arc<User>) -> View {
        let mut users = BTreeMap::new();
        let mut tokens = HashMap::new();
        for (name, bytes) in &raw {
            match decode(bytes, catalog) {
                Ok(u) if u.name == *name => {
                    for t in &u.tokens {
                        tokens.insert(t.digest.clone(), name.clone());
                    }
                    users.insert(name.clone(), Arc::new(u));
                }
                // Fails closed: a record this node cannot read grants nothing.
                Ok(_) => {
                    tracing::error!(user = %String::from_utf8_lossy(name), "user record names another user; ignored")
                }
                Err(e) => tracing::error!(user = %String::from_utf8_lossy(name), error = %e, "user record ignored"),
            }
        }
        View { users, raw, tokens, bootstrap_default }
    }

    /// The user named `name` (the bootstrap default user when `default` has no record).
    pub fn user(&self, name: &[u8]) -> Option<Arc<User>> {
        match self.users.get(name) {
            Some(u) => Some(u.clone()),
            None if name == DEFAULT_USER => Some(self.bootstrap_default.clone()),
            None => None,
        }
    }

    pub fn default_user(&self) -> Arc<User> {
        self.user(DEFAULT_USER).unwrap_or_else(|| self.bootstrap_default.clone())
    }

    /// Every user, by name (the default user included).
    pub fn all(&self) -> Vec<Arc<User>> {
        let mut out: Vec<Arc<User>> = self.users.values().cloned().collect();
        if !self.users.contains_key(DEFAULT_USER) {
            out.push(self.bootstrap_default.clone());
            out.sort_by(|a, b| a.name.cmp(&b.name));
        }
        out
    }

    fn token_user(&self, digest: &str) -> Option<Arc<User>> {
        self.tokens.get(digest).and_then(|n| self.users.get(n)).cloned()
    }
}

/// Why authentication failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// Unknown user, wrong password, or a disabled user (one answer for all, as Redis does).
    WrongPass,
    /// The check could not run now.
    Busy(String),
}

/// Settings of the user store.
#[derive(Debug, Clone)]
pub struct AclConfig {
    /// The default user's password when no `default` record is stored (`--admin-password`).
    pub bootstrap_password: Option<String>,
    /// Refuse clients from other hosts while the default user is on without a password.
    pub protected_mode: bool,
    pub password_checks_max: usize,
    pub refresh_interval: Duration,
}

impl Default for AclConfig {
    fn default() -> Self {
        AclConfig {
            bootstrap_password: None,
            protected_mode: true,
            password_checks_max: super::password::PASSWORD_CHECKS_MAX_DEFAULT,
            refresh_interval: Duration::from_millis(ACL_REFRESH_MS_DEFAULT),
        }
    }
}

/// The users of this node: its view and the ways to change them.
pub struct Acl {
    replica: Arc<dyn Replica>,
    catalog: &'static Catalog,
    view: RwLock<Arc<View>>,
    generation: AtomicU64,
    /// Changes made by this node; a refresh that overlapped one is discarded.
    local_changes: AtomicU64,
    loaded: tokio::sync::watch::Sender<bool>,
    last_refresh: tokio::sync::Mutex<Option<Instant>>,
    pub pool: Pool,
    pub cfg: AclConfig,
    /// Failed authentications (RESP and HTTP), for `/metrics`.
    failures: AtomicU64,
}

impl Acl {
    pub fn new(replica: Arc<dyn Replica>, catalog: &'static Catalog, cfg: AclConfig) -> Acl {
        let bootstrap = match &cfg.bootstrap_password {
            Some(pw) => match Argon2Hasher.hash(pw.as_bytes()) {
                Ok(h) => User::default_with_password(h),
                Err(e) => {
                    // Fail closed: a default user nobody can authenticate as.
                    tracing::error!(error = %e, "cannot hash the admin password; the default user is disabled");
                    User { enabled: false, ..User::default_with_password(String::new()) }
                }
            },
            None => User::default_user(),
        };
        let view = View {
            users: BTreeMap::new(),
            raw: BTreeMap::new(),
            tokens: HashMap::new(),
            bootstrap_default: Arc::new(bootstrap),
        };
        Acl {
            replica,
            catalog,
            view: RwLock::new(Arc::new(view)),
            generation: AtomicU64::new(1),
            local_changes: AtomicU64::new(0),
            loaded: tokio::sync::watch::channel(false).0,
            last_refresh: tokio::sync::Mutex::new(None),
            pool: Pool::new(cfg.password_checks_max),
            cfg,
            failures: AtomicU64::new(0),
        }
    }

    pub fn catalog(&self) -> &'static Catalog {
        self.catalog
    }

    pub fn view(&self) -> Arc<View> {
        self.view.read().clone()
    }

    /// Bumped whenever the view changes (connections re-resolve their user then).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Resolves once the users were read at least once, or after `timeout` (false).
    pub async fn wait_loaded(&self, timeout: Duration) -> bool {
        let mut rx = self.loaded.subscribe();
        let loaded = tokio::time::timeout(timeout, rx.wait_for(|l| *l)).await.is_ok_and(|r| r.is_ok());
        loaded
    }

    /// True when the default user lets anyone in without a password (Redis's "no password is
    /// set for the default user").
    pub fn default_is_open(&self) -> bool {
        let d = self.view().default_user();
        d.enabled && d.nopass
    }

    /// Protected mode: true when a client from `peer` must be refused (see [`protected_refuses`]).
    pub fn refuses(&self, peer: IpAddr) -> bool {
        protected_refuses(self.cfg.protected_mode, self.default_is_open(), peer)
    }

    /// Re-reads every user with `consistency` and installs the result.
    pub async fn refresh(&self, consistency: Consistency) -> Result<(), KvError> {
        let changes_before = self.local_changes.load(Ordering::Acquire);
        let prefix = users_prefix();
        let mut raw = BTreeMap::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.replica.scan(consistency, prefix.clone(), after, SCAN_PAGE_USERS, true).await?;
            for (k, item) in page.items {
                if raw.len() >= USERS_MAX {
                    tracing::error!("more than {USERS_MAX} users are stored (users_max); the rest are ignored");
                    break;
                }
                raw.insert(k[prefix.len()..].to_vec(), item.value);
            }
            match page.next_after {
                Some(k) if raw.len() < USERS_MAX => after = Some(k),
                _ => break,
            }
        }
        if self.local_changes.load(Ordering::Acquire) != changes_before {
            // A local change landed meanwhile and may be missing from what was read.
            return Ok(());
        }
        self.install(raw);
        let _ = self.loaded.send_replace(true);
        Ok(())
    }

    fn install(&self, raw: BTreeMap<Vec<u8>, Vec<u8>>) {
        let mut view = self.view.write();
        if view.raw == raw {
            return;
        }
        *view = Arc::new(View::new(raw, self.catalog, view.bootstrap_default.clone()));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Puts one record (or its absence) into the view after this node changed it.
    fn install_one(&self, name: &[u8], bytes: Option<Vec<u8>>) {
        self.local_changes.fetch_add(1, Ordering::AcqRel);
        let mut raw = self.view.read().raw.clone();
        match bytes {
            Some(b) => raw.insert(name.to_vec(), b),
            None => raw.remove(name),
        };
        self.install(raw);
    }

    /// Makes sure a linearizable re-read started after `asked`: joins one that did, or runs one
    /// (at most one per [`REFRESH_COALESCE`], so a flood of failed authentications costs a
    /// bounded number of reads).
    pub async fn refresh_since(&self, asked: Instant) {
        let mut last = self.last_refresh.lock().await;
        if last.is_some_and(|t| t >= asked) {
            return;
        }
        if let Some(t) = *last {
            tokio::time::sleep_until((t + REFRESH_COALESCE).into()).await;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.refresh(Consistency::Linearizable).await {
            tracing::debug!(error = %e, "re-reading users failed");
        }
    }

    /// Loads the users (this node's own copy first, so it serves at once after a restart), then
    /// re-reads them linearizably every `refresh_interval`, forever.
    pub async fn run_refresher(self: Arc<Self>) {
        loop {
            match self.refresh(Consistency::Stale).await {
                Ok(()) => break,
                Err(e) => tracing::warn!(error = %e, "cannot read the users yet; retrying"),
            }
            tokio::time::sleep(self.cfg.refresh_interval).await;
        }
        let mut tick = tokio::time::interval(self.cfg.refresh_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            *self.last_refresh.lock().await = Some(Instant::now());
            if let Err(e) = self.refresh(Consistency::Linearizable).await {
                tracing::debug!(error = %e, "re-reading users failed; keeping the last view");
            }
        }
    }

    /// Checks `password` for user `name`. Re-reads the users once before saying no.
    pub async fn authenticate(&self, name: &[u8], password: &[u8]) -> Result<Arc<User>, AuthError> {
        let asked = Instant::now();
        let first = self.view().user(name);
        if let Some(u) = &first {
            if self.password_ok(u, password).await? {
                return Ok(u.clone());
            }
        }
        self.refresh_since(asked).await;
        match self.view().user(name) {
            Some(u) if first.as_ref().is_none_or(|f| **f != *u) && self.password_ok(&u, password).await? => Ok(u),
            _ => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                Err(AuthError::WrongPass)
            }
        }
    }

    async fn password_ok(&self, u: &User, password: &[u8]) -> Result<bool, AuthError> {
        if !u.enabled {
            return Ok(false);
        }
        if u.nopass {
            return Ok(true);
        }
        if u.passwords.is_empty() {
            return Ok(false);
        }
        self.pool.verify(&u.name, password, &u.passwords).await.map_err(|e: Busy| AuthError::Busy(e.to_string()))
    }

    /// The user holding bearer token `token` (enabled users only). Re-reads once before no.
    pub async fn authenticate_token(&self, token: &str) -> Result<Arc<User>, AuthError> {
        let asked = Instant::now();
        let digest = sha256_hex(token.as_bytes());
        let found = |v: &View| v.token_user(&digest).filter(|u| u.enabled);
        if let Some(u) = found(&self.view()) {
            return Ok(u);
        }
        if !token.starts_with(TOKEN_PREFIX) {
            return Err(AuthError::WrongPass);
        }
        self.refresh_since(asked).await;
        found(&self.view()).ok_or_else(|| {
            self.failures.fetch_add(1, Ordering::Relaxed);
            AuthError::WrongPass
        })
    }

    /// Prometheus lines for `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let s = &self.pool.stats;
        let counters = [
            (
                "rampart_auth_failures_total",
                "Failed authentications (RESP and HTTP).",
                self.failures.load(Ordering::Relaxed),
            ),
            ("rampart_auth_password_checks_total", "argon2 password checks run.", s.checks.load(Ordering::Relaxed)),
            (
                "rampart_auth_password_cache_hits_total",
                "Passwords accepted from the cache of successful checks.",
                s.cache_hits.load(Ordering::Relaxed),
            ),
            (
                "rampart_auth_password_checks_refused_total",
                "Password checks refused because too many were waiting.",
                s.refused_busy.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        let users = self.view().all().len();
        let _ = writeln!(out, "# HELP rampart_acl_users Users this node knows.\n# TYPE rampart_acl_users gauge\nrampart_acl_users {users}");
    }

    /// The stored bytes of user `name` (linearizable), for a compare-and-set.
    async fn read_stored(&self, name: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let items = self
            .replica
            .get_many(Consistency::Linearizable, vec![Bytes::from(user_key(name))])
            .await
            .map_err(|e| e.resp_line())?;
        Ok(items.into_iter().next().flatten().map(|i| i.value))
    }

    /// Changes user `name` by `change` (run on the password pool: it may hash), as one
    /// compare-and-set, retried when another change of the same user came first.
    async fn change_user<T: Send + 'static>(
        &self,
        name: &[u8],
        change: impl Fn(&mut User) -> Result<T, String> + Send + Sync + Clone + 'static,
    ) -> Result<T, String> {
        for _ in 0..CHANGE_ATTEMPTS_MAX {
            let stored = self.read_stored(name).await?;
            let mut user = match &stored {
                Some(b) => decode(b, self.catalog)?,
                None if name == DEFAULT_USER => (*self.view().bootstrap_default).clone(),
                None => User::new(name),
            };
            let f = change.clone();
            let catalog = self.catalog;
            let (out, bytes) = self
                .pool
                .run(move || -> Result<(T, Vec<u8>), String> {
                    let out = f(&mut user)?;
                    Ok((out, encode(&user, catalog)?))
                })
                .await
                .map_err(|e| format!("ERR {e}"))??;
            let cmd = Command::SystemCas { key: user_key(name), expected: stored, new: bytes.clone() };
            match self.replica.write(cmd).await.map_err(|e| e.resp_line())?.outcome {
                Outcome::Swapped(true) => {
                    self.install_one(name, Some(bytes));
                    return Ok(out);
                }
                Outcome::Swapped(false) => continue,
                other => return Err(format!("ERR internal error: unexpected outcome {other:?}")),
            }
        }
        Err(format!(
            "ERR user changed concurrently {CHANGE_ATTEMPTS_MAX} times (change_attempts_max); retry the command"
        ))
    }

    /// `ACL SETUSER name ops...`: all modifiers apply, or none (the first error is answered).
    pub async fn set_user(&self, name: &[u8], ops: Vec<Vec<u8>>) -> Result<(), String> {
        check_username(name)?;
        if !self.view().users.contains_key(name) && self.view().users.len() >= USERS_MAX {
            return Err(format!("ERR the cluster holds {USERS_MAX} users already (users_max)"));
        }
        let catalog = self.catalog;
        self.change_user(name, move |u| {
            for op in &ops {
                u.apply(catalog, &Argon2Hasher, op).map_err(|e: RuleError| e.line())?;
            }
            Ok(())
        })
        .await
    }

    /// `ACL DELUSER names...`: how many existed.
    pub async fn delete_users(&self, names: &[Vec<u8>]) -> Result<i64, String> {
        if names.iter().any(|n| n == DEFAULT_USER) {
            return Err("ERR The 'default' user cannot be removed".into());
        }
        let cmds = names.iter().map(|n| Command::SystemDelete { key: user_key(n) }).collect();
        let mut count = 0;
        for (name, r) in names.iter().zip(self.replica.write_many(cmds).await) {
            match r.map_err(|e| e.resp_line())?.outcome {
                Outcome::Deleted { count: c } => {
                    if c > 0 {
                        self.install_one(name, None);
                    }
                    count += c as i64;
                }
                other => return Err(format!("ERR internal error: unexpected outcome {other:?}")),
            }
        }
        Ok(count)
    }

    /// A new bearer token for an existing user: the secret (shown once) and its record.
    pub async fn create_token(&self, name: &[u8]) -> Result<(String, Token), TokenError> {
        self.refresh(Consistency::Linearizable).await.map_err(|e| TokenError::Unavailable(e.to_string()))?;
        if !self.view().users.contains_key(name) && name != DEFAULT_USER {
            return Err(TokenError::NoSuchUser);
        }
        let secret: [u8; 32] = rand::random();
        let token = format!("{TOKEN_PREFIX}{}", secret.iter().map(|b| format!("{b:02x}")).collect::<String>());
        let digest = sha256_hex(token.as_bytes());
        let record = Token {
            id: digest[..16].to_string(),
            digest,
            created_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        let r = record.clone();
        self.change_user(name, move |u| {
            if u.tokens.len() >= TOKENS_PER_USER_MAX {
                return Err(format!("a user holds at most {TOKENS_PER_USER_MAX} tokens (tokens_per_user_max)"));
            }
            u.tokens.push(r.clone());
            Ok(())
        })
        .await
        .map_err(TokenError::Refused)?;
        Ok((token, record))
    }

    /// Every token: (user, record), after a linearizable re-read.
    pub async fn tokens(&self) -> Result<Vec<(Vec<u8>, Token)>, TokenError> {
        self.refresh(Consistency::Linearizable).await.map_err(|e| TokenError::Unavailable(e.to_string()))?;
        Ok(self.view().users.values().flat_map(|u| u.tokens.iter().map(|t| (u.name.clone(), t.clone()))).collect())
    }

    /// Revokes the token with public id `id`; false when there is none.
    pub async fn revoke_token(&self, id: &str) -> Result<bool, TokenError> {
        let owner = self.tokens().await?.into_iter().find(|(_, t)| t.id == id).map(|(u, _)| u);
        let Some(owner) = owner else { return Ok(false) };
        let id = id.to_string();
        self.change_user(&owner, move |u| {
            let before = u.tokens.len();
            u.tokens.retain(|t| t.id != id);
            Ok(u.tokens.len() != before)
        })
        .await
        .map_err(TokenError::Refused)
    }
}

/// Why a token operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    NoSuchUser,
    Unavailable(String),
    Refused(String),
}

/// Redis's protected mode, as a decision: with protected mode on and the default user letting
/// anyone in without a password, only loopback clients are served.
pub fn protected_refuses(protected_mode: bool, default_is_open: bool, peer: IpAddr) -> bool {
    protected_mode && default_is_open && !is_loopback(peer)
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// Redis 7.0's protected-mode refusal, with the remedies rampart has.
pub const PROTECTED_MODE_MESSAGE: &str = "DENIED Rampart is running in protected mode because protected mode is \
    enabled and no password is set for the default user. In this mode connections are only accepted from the \
    loopback interface. If you want to connect from external computers to Rampart you may adopt one of the \
    following solutions: 1) Set a password for the default user: start the nodes with --admin-password (or \
    RAMPART_ADMIN_PASSWORD), or run 'ACL SETUSER default >password' from the loopback interface. 2) Disable \
    protected mode with --protected-mode no (or protected_mode = false in the config file), and MAKE SURE the \
    node is not publicly accessible from the internet if you do so. NOTE: You only need to do one of the above \
    things in order for the server to start accepting connections from the outside.";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::rules::tests::catalog;

    #[test]
    fn protected_mode_refuses_only_remote_clients_of_an_open_node() {
        let remote: IpAddr = "192.0.2.7".parse().unwrap();
        let local4: IpAddr = "127.0.0.1".parse().unwrap();
        let local_other: IpAddr = "127.3.4.5".parse().unwrap();
        let local6: IpAddr = "::1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let remote6: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(protected_refuses(true, true, remote));
        assert!(protected_refuses(true, true, remote6));
        for ip in [local4, local_other, local6, mapped] {
            assert!(!protected_refuses(true, true, ip), "{ip}");
        }
        assert!(!protected_refuses(true, false, remote), "a password is set");
        assert!(!protected_refuses(false, true, remote), "the operator opted out");
    }

    #[test]
    fn records_round_trip() {
        let c = Box::leak(Box::new(catalog()));
        let mut u = User::new(b"bin\xffname");
        for op in ["on", "~a*", "~\u{1}b", "+@read", "-get", "#$argon2id$x"] {
            let _ = u.apply(c, &crate::acl::rules::tests::Plain, op.as_bytes());
        }
        u.passwords.push("$argon2id$v=19$m=19456,t=2,p=1$abc$def".into());
        u.tokens.push(Token { id: "0123456789abcdef".into(), digest: "ff".repeat(32), created_ms: 9 });
        let bytes = encode(&u, c).unwrap();
        assert_eq!(decode(&bytes, c).unwrap(), u);
        assert!(decode(b"\x00garbage", c).is_err());
    }

    #[test]
    fn a_record_that_cannot_be_read_grants_nothing() {
        let c = Box::leak(Box::new(catalog()));
        let mut good = User::new(b"alice");
        good.enabled = true;
        let mut raw = BTreeMap::new();
        raw.insert(b"alice".to_vec(), encode(&good, c).unwrap());
        raw.insert(b"mallory".to_vec(), b"not a record".to_vec());
        raw.insert(b"eve".to_vec(), encode(&good, c).unwrap());
        let v = View::new(raw, c, Arc::new(User::default_user()));
        assert!(v.user(b"alice").is_some());
        assert!(v.user(b"mallory").is_none());
        assert!(v.user(b"eve").is_none(), "a record under another user's key");
        assert_eq!(v.user(b"default").unwrap().name, b"default");
        let names: Vec<Vec<u8>> = v.all().iter().map(|u| u.name.clone()).collect();
        assert_eq!(names, vec![b"alice".to_vec(), b"default".to_vec()]);
    }
}
