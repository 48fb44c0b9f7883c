//! Locks and elections (leader mode), built from what the replica already offers: leases,
//! [`Replica::put_with_lease`], per-key revisions, and watches. It is etcd's recipe
//! (`client/v3/concurrency`): every contender writes one key under the lock's prefix, attached to
//! its lease and only if absent; the contender whose key has the lowest revision holds the lock;
//! every other waits for the key just before its own to go. This module knows neither
//! replication mode: multi-master mode, which has neither leases nor revisions, gets
//! [`leader_mode_only`].
//!
//! **Keys.** Contender keys are ordinary keys, so they are replicated, listed, watched and
//! checked by ACL rules like any other: `_rampart/lock/NAME/LEASE` and
//! `_rampart/election/NAME/LEASE`, `LEASE` the lease id in 16 hex digits. One lease has at most
//! one key per lock or election: a second request with the same lease takes the same place in
//! line (so a retried request is harmless, and a holder asking again gets its own token back).
//!
//! **Fencing tokens.** A holder's token is the revision of its key. It strictly increases across
//! holders of one lock: a holder's key has no lower-revision key left beside it when it takes the
//! lock, and keys only ever gain higher revisions (a key once deleted never comes back with its
//! old revision), so every later holder's key was written after this one's.
//!
//! **Waiting.** A waiter watches the key just before its own (from the next write on), then
//! re-reads it, so a delete before the watch began is seen by the read and one after by the
//! watch. Then it reads the line again. A line is read page by page; that is safe because no key
//! with a revision below the waiter's can appear after the waiter's own write.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rampart_kv::lease::LeaseId;
use rampart_kv::{leader_mode_only, Command, Consistency, KvError, Outcome, WatchError, WatchFilter, WatchMessage};
use tokio::time::Instant;

use crate::app::App;

/// Where lock contenders' keys live.
pub const LOCK_PREFIX: &str = "_rampart/lock/";
/// Where election candidates' keys live.
pub const ELECTION_PREFIX: &str = "_rampart/election/";
/// Longest lock or election name, in bytes.
pub const NAME_BYTES_MAX: usize = 256;
/// Most keys read per page of a line.
const LINE_PAGE_KEYS: usize = 1_000;
/// How often a waiter's watch reports progress (it only keeps the watch's own bookkeeping).
const WAIT_PROGRESS: Duration = Duration::from_secs(5);
/// Pause before reading a line again after a transient error (no leader, no quorum) while
/// waiting; the waiter keeps its place meanwhile.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// A lock or an election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Lock,
    Election,
}

impl Kind {
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Lock => LOCK_PREFIX,
            Kind::Election => ELECTION_PREFIX,
        }
    }

    pub fn noun(self) -> &'static str {
        match self {
            Kind::Lock => "lock",
            Kind::Election => "election",
        }
    }

    /// What multi-master mode answers (see [`leader_mode_only`]).
    fn plural(self) -> &'static str {
        match self {
            Kind::Lock => "locks",
            Kind::Election => "elections",
        }
    }
}

/// Why a lock or election request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoordError {
    #[error("{0}")]
    BadRequest(String),
    /// This mode has no locks or elections.
    #[error("{0}")]
    Unsupported(String),
    /// Not acquired within the wait; the contender's key was withdrawn unless `kept`.
    #[error("{noun} {name:?} not acquired within {waited_ms} ms (wait_ms); {}", place(*.kept))]
    TimedOut { noun: &'static str, name: String, waited_ms: u64, kept: bool },
    /// The contender's key went while it waited: its lease expired or was revoked.
    #[error("lease {lease} expired or was revoked while waiting for {noun} {name:?}")]
    LeaseGone { noun: &'static str, name: String, lease: LeaseId },
    /// No watch could be started (the node is at `WATCHES_MAX`): the request is refused rather
    /// than left to poll.
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Kv(#[from] KvError),
}

/// What became of a timed-out request's place in line.
fn place(kept: bool) -> &'static str {
    if kept {
        "the lease keeps its place in line"
    } else {
        "this request's place in line was withdrawn"
    }
}

impl From<WatchError> for CoordError {
    fn from(e: WatchError) -> Self {
        match e {
            WatchError::Unsupported(m) => CoordError::Unsupported(m),
            WatchError::Kv(e) => CoordError::Kv(e),
            // Watches here start from the next write, which is never compacted.
            e @ WatchError::Compacted { .. } => CoordError::Kv(KvError::Internal(e.to_string())),
        }
    }
}

/// One contender (a lock holder or waiter, an election candidate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contender {
    pub key: Vec<u8>,
    pub lease: LeaseId,
    /// The revision of its key: the fencing token once it holds.
    pub revision: u64,
    pub value: Vec<u8>,
}

/// A lock's or election's line, as one read saw it.
#[derive(Debug, Clone, Default)]
pub struct Line {
    /// The holder (the lowest revision), if any.
    pub first: Option<Contender>,
    /// How many contenders there are, the holder included.
    pub len: usize,
    /// The revision of the key asked about, if it is in line.
    pub mine: Option<u64>,
    /// The contender just before the key asked about (the highest revision below its own).
    pub before_mine: Option<Contender>,
}

/// Refuses a name that is empty, too long, or not one path segment of printable text.
pub fn check_name(kind: Kind, name: &str) -> Result<(), CoordError> {
    let bad = |why: &str| Err(CoordError::BadRequest(format!("{} name {name:?} {why}", kind.noun())));
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > NAME_BYTES_MAX {
        return bad(&format!("is longer than {NAME_BYTES_MAX} bytes (NAME_BYTES_MAX)"));
    }
    if name.chars().any(|c| c == '/' || c.is_control()) {
        return bad("may not contain '/' or control characters");
    }
    Ok(())
}

/// True for a key under a lock's or election's prefix.
pub fn is_line_key(key: &[u8]) -> bool {
    key.starts_with(LOCK_PREFIX.as_bytes()) || key.starts_with(ELECTION_PREFIX.as_bytes())
}

/// The prefix under which a lock's or election's contenders' keys live.
pub fn line_prefix(kind: Kind, name: &str) -> String {
    format!("{}{name}/", kind.prefix())
}

/// The key lease `lease` contends with.
pub fn contender_key(kind: Kind, name: &str, lease: LeaseId) -> Vec<u8> {
    format!("{}{lease:016x}", line_prefix(kind, name)).into_bytes()
}

/// The lease a contender key names (its last path segment), if it is one of ours.
fn lease_of(key: &[u8]) -> Option<LeaseId> {
    let tail = key.rsplit(|b| *b == b'/').next()?;
    if tail.len() != 16 || !tail.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(tail).ok()?, 16).ok()
}

/// Multi-master mode has no leases, no watches and only per-key revisions (a line is ordered by
/// revisions across keys): nothing here can work there.
fn require_leader_mode(app: &App, kind: Kind) -> Result<(), CoordError> {
    if app.replica.revisions_are_global() {
        Ok(())
    } else {
        Err(CoordError::Unsupported(leader_mode_only(kind.plural())))
    }
}

/// Reads the line of `kind`/`name` linearizably; `mine` is the key (and its revision) to place
/// in it.
pub async fn line(app: &Arc<App>, kind: Kind, name: &str, mine: Option<(&[u8], u64)>) -> Result<Line, CoordError> {
    require_leader_mode(app, kind)?;
    let prefix = line_prefix(kind, name).into_bytes();
    let mut out = Line::default();
    let mut after = None;
    loop {
        let slot = app.scan_slot().await?;
        let page = app.scan(&slot, Consistency::Linearizable, prefix.clone(), after, LINE_PAGE_KEYS, true).await?;
        drop(slot);
        for (key, item) in page.items {
            // Only keys of the recipe's shape take part (anything else written here is ignored).
            let (Some(lease), Some(revision)) = (lease_of(&key), item.revision) else { continue };
            out.len += 1;
            let c = Contender { key, lease, revision, value: item.value };
            if let Some((my_key, my_rev)) = mine {
                if my_key == c.key.as_slice() {
                    out.mine = Some(revision);
                } else if (revision, c.key.as_slice()) < (my_rev, my_key)
                    && out
                        .before_mine
                        .as_ref()
                        .is_none_or(|b| (revision, c.key.as_slice()) > (b.revision, b.key.as_slice()))
                {
                    out.before_mine = Some(c.clone());
                }
            }
            // Keys written by one entry share its revision; the key breaks the tie.
            if out.first.as_ref().is_none_or(|f| (revision, c.key.as_slice()) < (f.revision, f.key.as_slice())) {
                out.first = Some(c);
            }
        }
        after = page.next_after;
        if after.is_none() {
            return Ok(out);
        }
    }
}

/// Takes a place in the line of `kind`/`name` with `lease` (storing `value` in the key) and waits
/// up to `wait` to reach its head. Answers the holder's key and token (its revision). If the
/// request ends without the lock (timeout, error, the client gone), its key is withdrawn, unless
/// `keep_place`: then the key stays in line until its lease ends, and the next request with the
/// same lease carries on from the same place (for a client that keeps the lease and asks again).
pub async fn acquire(
    app: &Arc<App>,
    kind: Kind,
    name: &str,
    lease: LeaseId,
    value: Vec<u8>,
    wait: Duration,
    keep_place: bool,
) -> Result<Contender, CoordError> {
    require_leader_mode(app, kind)?;
    check_name(kind, name)?;
    let deadline = Instant::now() + wait;
    let key = contender_key(kind, name, lease);
    app.check_key(&key)?;
    let (revision, created) = join(app, &key, &value, lease).await?;
    // A key this request did not write belongs to an earlier request of the same lease (which
    // may hold the lock by now): it is never withdrawn here.
    let keep_place = keep_place || !created;
    // From here on the key is in line; if this request ends without the lock (an error, a
    // timeout, the client going away), the key is withdrawn so it never holds the lock unknown.
    let mut guard = Withdraw { app: app.clone(), key: key.clone(), revision, armed: !keep_place };
    let result = wait_for_head(app, kind, name, &key, revision, deadline).await;
    guard.armed = false;
    match &result {
        // Holding, or the key is gone already.
        Ok(true) | Err(CoordError::LeaseGone { .. }) => {}
        Ok(false) | Err(_) if !keep_place => {
            // On its own task, so a request dropped meanwhile still withdraws.
            let (app, key) = (app.clone(), key.clone());
            let _ = tokio::spawn(async move { withdraw(&app, &key, revision).await }).await;
        }
        Ok(false) | Err(_) => {}
    }
    let waited_ms = wait.as_millis().min(u64::MAX as u128) as u64;
    match result {
        Ok(true) => Ok(Contender { key, lease, revision, value }),
        Ok(false) => {
            Err(CoordError::TimedOut { noun: kind.noun(), name: name.to_string(), waited_ms, kept: keep_place })
        }
        Err(e) => Err(e),
    }
}

/// Writes the contender key if absent; answers its revision (that of the key already there when
/// this lease was in line before) and whether this call wrote it.
async fn join(app: &Arc<App>, key: &[u8], value: &[u8], lease: LeaseId) -> Result<(u64, bool), CoordError> {
    // Twice at most: the key found on the first try can vanish (its lease revoked) before it is
    // read, and then the second write creates it or fails naming the lease.
    for _ in 0..2 {
        if let Some(rev) = app.replica.put_with_lease(key.to_vec(), value.to_vec(), lease, true).await? {
            return Ok((rev, true));
        }
        if let Some(item) = app.get(Consistency::Linearizable, Bytes::copy_from_slice(key)).await? {
            return item
                .revision
                .map(|r| (r, false))
                .ok_or_else(|| KvError::Internal("a key without a revision in leader mode".into()).into());
        }
    }
    Err(KvError::TryAgain("the contender key changed while it was being written; retry".into()).into())
}

/// Waits until `key` (at `revision`) heads the line: `Ok(true)`, or `Ok(false)` at `deadline`.
async fn wait_for_head(
    app: &Arc<App>,
    kind: Kind,
    name: &str,
    key: &[u8],
    revision: u64,
    deadline: Instant,
) -> Result<bool, CoordError> {
    loop {
        let line = match line(app, kind, name, Some((key, revision))).await {
            Ok(l) => l,
            Err(e) if transient(&e) => {
                if !pause_until(deadline).await {
                    return Ok(false);
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        if line.mine != Some(revision) {
            let lease = lease_of(key).unwrap_or(0);
            return Err(CoordError::LeaseGone { noun: kind.noun(), name: name.to_string(), lease });
        }
        let Some(before) = line.before_mine else { return Ok(true) };
        match wait_gone(app, &before, (key, revision), deadline).await {
            Ok(true) => continue,
            Ok(false) => return Ok(false),
            Err(e) if transient(&e) => {
                if !pause_until(deadline).await {
                    return Ok(false);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// An error worth waiting out: no leader or no quorum for now.
fn transient(e: &CoordError) -> bool {
    matches!(e, CoordError::Kv(KvError::TryAgain(_) | KvError::ClusterDown(_) | KvError::Timeout(_)))
}

/// Sleeps [`RETRY_PAUSE`] unless `deadline` comes first; false once it has passed.
async fn pause_until(deadline: Instant) -> bool {
    let until = (Instant::now() + RETRY_PAUSE).min(deadline);
    tokio::time::sleep_until(until).await;
    Instant::now() < deadline
}

/// Waits until `c`'s key is gone or rewritten: `Ok(true)`, or `Ok(false)` at `deadline`. Any
/// event on the key ends the wait (the caller reads the line again), and so does the waiter's
/// own key (`mine`, with its revision) found gone at a progress tick (its lease revoked or run
/// out), so such a waiter does not sit out its whole wait.
async fn wait_gone(app: &Arc<App>, c: &Contender, mine: (&[u8], u64), deadline: Instant) -> Result<bool, CoordError> {
    let mut stream = app.replica.watch(WatchFilter::Key(c.key.clone()), None, WAIT_PROGRESS).await.map_err(|e| {
        match CoordError::from(e) {
            CoordError::Kv(KvError::TryAgain(m)) => CoordError::Busy(m),
            other => other,
        }
    })?;
    // The watch is live: a delete from here on reaches it, and one before shows in this read.
    match app.get(Consistency::Linearizable, Bytes::copy_from_slice(&c.key)).await? {
        Some(item) if item.revision == Some(c.revision) => {}
        _ => return Ok(true),
    }
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => return Ok(false),
            Ok(Some(WatchMessage::Progress { .. })) => {
                let own = app.get(Consistency::Stale, Bytes::copy_from_slice(mine.0)).await?;
                if own.and_then(|i| i.revision) != Some(mine.1) {
                    return Ok(true);
                }
            }
            // An event, or a watch that ended (cut off, shutting down): read the line again.
            Ok(Some(WatchMessage::Events(_) | WatchMessage::CutOff { .. }) | None) => return Ok(true),
        }
    }
}

/// Removes `key` if it still has `revision` (so never a newer key of the same lease). Best
/// effort: if it fails, the key goes with its lease.
async fn withdraw(app: &App, key: &[u8], revision: u64) {
    let cmd = Command::DeleteIfRevision { key: key.to_vec(), revision };
    if let Err(e) = app.write(cmd).await {
        tracing::warn!(key = %String::from_utf8_lossy(key), error = %e, "could not withdraw a lock or election contender; it goes with its lease");
    }
}

/// Withdraws a contender key when a request ends without taking the lock (its future dropped
/// because the client went away).
struct Withdraw {
    app: Arc<App>,
    key: Vec<u8>,
    revision: u64,
    armed: bool,
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        if self.armed {
            let (app, key, revision) = (self.app.clone(), std::mem::take(&mut self.key), self.revision);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { withdraw(&app, &key, revision).await });
            }
        }
    }
}

/// Releases the lock (resigns the election) held with fencing token `token`: removes the key with
/// that revision. False if no contender has it (released already, or its lease ended).
pub async fn release(app: &Arc<App>, kind: Kind, name: &str, token: u64) -> Result<bool, CoordError> {
    require_leader_mode(app, kind)?;
    check_name(kind, name)?;
    let prefix = line_prefix(kind, name).into_bytes();
    let mut after = None;
    loop {
        let slot = app.scan_slot().await?;
        let page = app.scan(&slot, Consistency::Linearizable, prefix.clone(), after, LINE_PAGE_KEYS, false).await?;
        drop(slot);
        if let Some((key, _)) =
            page.items.into_iter().find(|(k, item)| item.revision == Some(token) && lease_of(k).is_some())
        {
            let resp = app.write(Command::DeleteIfRevision { key, revision: token }).await?;
            return Ok(matches!(resp.outcome, Outcome::Deleted { count: 1 }));
        }
        after = page.next_after;
        if after.is_none() {
            return Ok(false);
        }
    }
}

/// What an observer of an election (or lock) sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// The holder changed (`None`: nobody holds it now).
    Holder(Option<Contender>),
    /// Nothing changed up to this revision (keeps a quiet stream's connection alive).
    Progress(u64),
}

/// Most observations queued for one observer before it is considered gone.
const OBSERVE_QUEUE: usize = 16;

/// Follows the holder of `kind`/`name`: the current one first, then every change. The stream ends
/// when the receiver is dropped (noticed at the next change or progress) or on an error, which
/// is its last item.
pub async fn observe(
    app: &Arc<App>,
    kind: Kind,
    name: &str,
    progress: Duration,
) -> Result<tokio::sync::mpsc::Receiver<Result<Observed, CoordError>>, CoordError> {
    require_leader_mode(app, kind)?;
    check_name(kind, name)?;
    let filter = WatchFilter::Prefix(line_prefix(kind, name).into_bytes());
    let mut stream = app.replica.watch(filter.clone(), None, progress).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(OBSERVE_QUEUE);
    let (app, name) = (app.clone(), name.to_string());
    tokio::spawn(async move {
        let mut last: Option<Option<u64>> = None;
        loop {
            // The observer went away (noticed here too, so a cluster without a leader, which
            // sends nothing, does not keep this task retrying for nobody).
            if tx.is_closed() {
                return;
            }
            // The watch is live before each read, so no change falls between the two.
            match line(&app, kind, &name, None).await {
                Ok(l) => {
                    let rev = l.first.as_ref().map(|c| c.revision);
                    if last != Some(rev) {
                        last = Some(rev);
                        if tx.send(Ok(Observed::Holder(l.first))).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) if transient(&e) => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
            loop {
                match stream.next().await {
                    Some(WatchMessage::Events(_)) => break,
                    Some(WatchMessage::Progress { revision }) => {
                        if tx.send(Ok(Observed::Progress(revision))).await.is_err() {
                            return;
                        }
                    }
                    Some(WatchMessage::CutOff { .. }) | None => {
                        match app.replica.watch(filter.clone(), None, progress).await {
                            Ok(s) => stream = s,
                            Err(e) => {
                                let _ = tx.send(Err(e.into())).await;
                                return;
                            }
                        }
                        break;
                    }
                }
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_printable_segment() {
        assert!(check_name(Kind::Lock, "jobs").is_ok());
        assert!(check_name(Kind::Lock, "a b:c.d").is_ok());
        assert!(check_name(Kind::Lock, "").is_err());
        assert!(check_name(Kind::Lock, "a/b").is_err());
        assert!(check_name(Kind::Election, "a\nb").is_err());
        assert!(check_name(Kind::Lock, &"x".repeat(NAME_BYTES_MAX)).is_ok());
        assert!(check_name(Kind::Lock, &"x".repeat(NAME_BYTES_MAX + 1)).is_err());
    }

    #[test]
    fn only_the_lock_api_writes_into_a_line() {
        use crate::app::check_line_write;
        let k = contender_key(Kind::Lock, "jobs", 1);
        let set = Command::Set {
            key: k.clone(),
            value: b"x".to_vec(),
            cond: rampart_kv::SetCond::Always,
            return_old: false,
            ttl: rampart_kv::Ttl::Clear,
        };
        assert!(check_line_write(&set).is_err());
        assert!(check_line_write(&Command::Batch(vec![set.clone()])).is_err(), "inside a MULTI too");
        assert!(check_line_write(&Command::Del { keys: vec![k.clone()] }).is_ok(), "deleting stays allowed");
        assert!(check_line_write(&Command::DeleteIfRevision { key: k, revision: 3 }).is_ok());
        let other = Command::Delete { key: b"x".to_vec() };
        assert!(check_line_write(&other).is_ok());
        let other = Command::IncrBy { key: b"_rampart/other".to_vec(), delta: 1 };
        assert!(check_line_write(&other).is_ok(), "only the lock and election prefixes are guarded");
    }

    #[test]
    fn a_contender_key_names_its_lease() {
        let k = contender_key(Kind::Lock, "jobs", 0x1f);
        assert_eq!(k, b"_rampart/lock/jobs/000000000000001f");
        assert_eq!(lease_of(&k), Some(0x1f));
        assert_eq!(lease_of(&contender_key(Kind::Election, "e", u64::MAX)), Some(u64::MAX));
        assert_eq!(lease_of(b"_rampart/lock/jobs/1f"), None);
        assert_eq!(lease_of(b"_rampart/lock/jobs/zzzzzzzzzzzzzzzz"), None);
        assert_eq!(
            lease_of(b"_rampart/lock/jobs/+00000000000001f"),
            None,
            "from_str_radix takes a sign; a key may not"
        );
    }
}
