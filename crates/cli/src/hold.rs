//! `rampart lock NAME -- CMD…` and `rampart elect NAME -- CMD…`: run a command only while this
//! process holds a lock (or leads an election), like `etcdctl lock` and `consul lock`.
//!
//! The process grants a lease, keeps it alive every TTL/3 (on any node), waits its turn, then
//! runs CMD with the fencing token in `RAMPART_FENCING_TOKEN`. When CMD exits, the lock is
//! released and the lease revoked, and the process exits with CMD's status. If the lease cannot
//! be confirmed in time (the cluster unreachable, this process paused past its TTL, the lease
//! found gone, or the holder's key removed), CMD is stopped (SIGTERM, then SIGKILL after a grace
//! period) and the process exits with status 1: someone else may hold the lock by then. That
//! cannot be perfect (CMD may act in the moment before it is stopped), which is what the fencing
//! token is for: see `docs/api.md`, Locks.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use rampart_client::{Client, Held};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::ctl::Connection;

/// The longest a single lock request waits on the server; a longer `--wait-ms` asks again, with
/// the same lease and its place in line kept (`keep_place`). Below the server's `WAIT_MS_MAX`
/// and below `rampart lb`'s default request timeout (30 s), so it also works through a balancer.
const REQUEST_WAIT_MS: u64 = 20_000;
/// Pause before asking again after a cluster that could not answer (or refused: too many
/// waiters), doubled after each failure in a row up to [`RETRY_PAUSE_MAX`].
const RETRY_PAUSE: Duration = Duration::from_millis(200);
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(5);

#[derive(Args, Debug)]
pub struct HoldArgs {
    #[command(flatten)]
    conn: Connection,
    /// The lock's (or election's) name: one path segment.
    name: String,
    /// The lease's TTL: how long after this process stops renewing it (killed, paused, cut off)
    /// the lock passes on.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    ttl_ms: u64,
    /// Give up (exit 1, CMD never run) if not acquired within this many milliseconds; without
    /// it, wait as long as it takes.
    #[arg(long, value_name = "MS")]
    wait_ms: Option<u64>,
    /// Elections only: the value published while this process leads (default: host and pid).
    #[arg(long)]
    value: Option<String>,
    /// The command to run, and its arguments.
    #[arg(required = true, last = true, value_name = "CMD")]
    cmd: Vec<String>,
}

/// Which primitive to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    Lock,
    Election,
}

impl What {
    fn noun(self) -> &'static str {
        match self {
            What::Lock => "lock",
            What::Election => "election",
        }
    }
}

/// Why the holder stopped believing it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Lease {
    Alive,
    Lost(String),
}

/// Runs `rampart lock` / `rampart elect`; answers the exit status.
pub fn run(what: What, args: HoldArgs) -> anyhow::Result<u8> {
    if what == What::Lock && args.value.is_some() {
        bail!("--value is for `rampart elect` (a lock has no value)");
    }
    let client = args.conn.client()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(hold(what, client, args))
}

async fn hold(what: What, client: Client, args: HoldArgs) -> anyhow::Result<u8> {
    let ttl = Duration::from_millis(args.ttl_ms);
    let lease = client.lease_grant(args.ttl_ms).await.context("cannot grant a lease")?;
    let (state_tx, mut state) = watch::channel(Lease::Alive);
    let (held_tx, held_rx) = watch::channel(None::<Held>);
    let keeper = tokio::spawn(keep_alive(client.clone(), lease.id, ttl, held_rx, state_tx));
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let result = async {
        // A signal while waiting ends the wait; the lease is revoked below, taking the place in
        // line with it.
        let acquired = tokio::select! {
            r = acquire(what, &client, lease.id, &args, &mut state) => r?,
            _ = sigterm.recv() => bail!("stopped by SIGTERM while waiting for {} {:?}", what.noun(), args.name),
            _ = sigint.recv() => bail!("stopped by SIGINT while waiting for {} {:?}", what.noun(), args.name),
        };
        let Some(held) = acquired else {
            bail!("{} {:?} not acquired within {} ms", what.noun(), args.name, args.wait_ms.unwrap_or(0));
        };
        held_tx.send_replace(Some(held.clone()));
        let now = state.borrow().clone();
        if let Lease::Lost(why) = now {
            bail!("acquired {} {:?} but then lost it before running the command: {why}", what.noun(), args.name);
        }
        run_while_held(what, &held, &args.cmd, ttl, &mut state).await
    }
    .await;
    keeper.abort();
    // Release first (so the next holder need not wait for the lease), then end the lease; either
    // failing leaves the lease to run out.
    let held = held_tx.borrow().clone();
    if let Some(held) = held {
        let _ = match what {
            What::Lock => client.unlock(&args.name, held.fencing_token).await,
            What::Election => client.resign(&args.name, held.fencing_token).await,
        };
    }
    let _ = client.lease_revoke(lease.id).await;
    result
}

/// Waits for the lock (or the election) while the lease is kept alive: the holder, or `None`
/// when `--wait-ms` ran out.
async fn acquire(
    what: What,
    client: &Client,
    lease: u64,
    args: &HoldArgs,
    state: &mut watch::Receiver<Lease>,
) -> anyhow::Result<Option<Held>> {
    // A wait too long to represent is no deadline at all.
    let deadline = args.wait_ms.and_then(|ms| Instant::now().checked_add(Duration::from_millis(ms)));
    let value = args.value.clone().unwrap_or_else(default_value);
    let mut pause = RETRY_PAUSE;
    loop {
        let now = state.borrow().clone();
        if let Lease::Lost(why) = now {
            bail!("gave up waiting for {} {:?}: {why}", what.noun(), args.name);
        }
        let left = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).as_millis() as u64,
            None => REQUEST_WAIT_MS,
        };
        let wait_ms = left.min(REQUEST_WAIT_MS);
        let r = match what {
            What::Lock => client.lock(&args.name, lease, wait_ms, true).await,
            What::Election => client.campaign(&args.name, lease, &value, wait_ms, true).await,
        };
        // An answer (not acquired yet) ends a run of failures.
        if let Ok(None) = r {
            pause = RETRY_PAUSE;
        }
        match r {
            Ok(Some(held)) => return Ok(Some(held)),
            Ok(None) if deadline.is_some_and(|d| Instant::now() >= d) => return Ok(None),
            Ok(None) => {}
            Err(e @ (rampart_client::Error::Unavailable { .. } | rampart_client::Error::OutcomeUnknown { .. })) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(e).context(format!("cannot acquire {} {:?}", what.noun(), args.name));
                }
                note(&format!("retrying in {} ms: {e}", pause.as_millis()));
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_PAUSE_MAX);
                continue;
            }
            Err(e) => return Err(e).context(format!("cannot acquire {} {:?}", what.noun(), args.name)),
        }
    }
}

/// A candidate's default value: where it runs.
fn default_value() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    format!("{host} pid {}", std::process::id())
}

/// A line on stderr for the person running the command (this command has no log setup).
fn note(msg: &str) {
    eprintln!("rampart: {msg}");
}

/// Keeps the lease alive every TTL/3, retrying sooner on errors. Sets `Lost` once the lease is
/// found gone, the holder's key is gone, or no renewal has been confirmed for most of a TTL
/// (from when the last confirmed one was sent: the server counts from no earlier).
async fn keep_alive(
    client: Client,
    lease: u64,
    ttl: Duration,
    held: watch::Receiver<Option<Held>>,
    state: watch::Sender<Lease>,
) {
    let every = ttl / 3;
    // Stop the command with a fifth of the TTL to spare, so it has stopped before the lease
    // can run out on the server.
    let trust = ttl - ttl / 5;
    let mut confirmed_at = Instant::now();
    let per_try = client.with_timeout(every.max(Duration::from_millis(100)));
    let not_renewed = |trust: Duration| {
        format!(
            "lease {lease} not renewed for {} ms of its {} ms TTL (cluster unreachable, or this process was paused)",
            trust.as_millis(),
            ttl.as_millis()
        )
    };
    loop {
        let sent = Instant::now();
        // Woken late (this process was paused): give up before asking, the lease may be gone.
        if sent >= confirmed_at + trust {
            let _ = state.send(Lease::Lost(not_renewed(trust)));
            return;
        }
        // One round (every endpoint may be tried) ends by the deadline at the latest.
        let round = async {
            match per_try.lease_keepalive(lease).await {
                Ok(Some(_)) => {
                    let h = held.borrow().clone();
                    let why = match h {
                        Some(h) => check_key(&per_try, &h).await,
                        None => None,
                    };
                    (true, why)
                }
                Ok(None) => (false, Some(format!("lease {lease} expired or was revoked"))),
                Err(_) => (false, None),
            }
        };
        let lost = match tokio::time::timeout_at(confirmed_at + trust, round).await {
            Ok((renewed, why)) => {
                if renewed {
                    confirmed_at = sent;
                }
                why
            }
            Err(_) => Some(not_renewed(trust)),
        };
        if let Some(why) = lost {
            let _ = state.send(Lease::Lost(why));
            return;
        }
        let give_up = confirmed_at + trust;
        if Instant::now() >= give_up {
            let _ = state.send(Lease::Lost(not_renewed(trust)));
            return;
        }
        let next = if confirmed_at == sent { sent + every } else { Instant::now() + every / 4 };
        tokio::select! {
            _ = tokio::time::sleep_until(next.min(give_up)) => {}
            _ = state.closed() => return,
        }
    }
}

/// `Some(why)` if the holder's key is no longer there at its token (removed by someone else).
async fn check_key(client: &Client, h: &Held) -> Option<String> {
    match client.get(&h.key).await {
        Ok(Some(e)) if e.revision == h.fencing_token => None,
        Ok(Some(_)) | Ok(None) => Some(format!("the holder's key {} was removed", h.key)),
        // Unknown for now; the next round asks again.
        Err(_) => None,
    }
}

/// Runs `cmd` until it exits (its status is the answer) or the lease is lost (CMD stopped,
/// status 1).
async fn run_while_held(
    what: What,
    held: &Held,
    cmd: &[String],
    ttl: Duration,
    state: &mut watch::Receiver<Lease>,
) -> anyhow::Result<u8> {
    let (program, rest) = cmd.split_first().context("no command given")?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(rest)
        .env("RAMPART_FENCING_TOKEN", held.fencing_token.to_string())
        .env("RAMPART_LEASE", held.lease.to_string())
        .env(if what == What::Lock { "RAMPART_LOCK_KEY" } else { "RAMPART_ELECTION_KEY" }, &held.key)
        .stdin(Stdio::inherit())
        // Its own process group, so stopping it reaches whatever it started too.
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: prctl(2) is async-signal-safe; it runs in the child between fork and exec. If
    // this process dies without stopping CMD (SIGKILL, OOM), the kernel kills CMD, which must
    // not outlive the keepalives.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
            Ok(())
        });
    }
    let mut child = command.spawn().with_context(|| format!("cannot run {program:?}"))?;
    let pid = child.id().map(|p| p as i32);
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let grace = (ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(2));
    let lost = state_lost(state);
    tokio::pin!(lost);
    tokio::select! {
        status = child.wait() => Ok(exit_code(status?)),
        why = &mut lost => {
            eprintln!("rampart: lost {} {}: {why}; stopping the command", what.noun(), held.key);
            stop(&mut child, pid, grace).await;
            Ok(1)
        }
        _ = sigterm.recv() => { stop(&mut child, pid, grace).await; Ok(128 + libc::SIGTERM as u8) }
        _ = sigint.recv() => { stop(&mut child, pid, grace).await; Ok(128 + libc::SIGINT as u8) }
    }
}

/// Resolves with the reason once the lease is lost.
async fn state_lost(state: &mut watch::Receiver<Lease>) -> String {
    loop {
        let now = state.borrow_and_update().clone();
        if let Lease::Lost(why) = now {
            return why;
        }
        if state.changed().await.is_err() {
            return "the keepalive task ended".into();
        }
    }
}

/// SIGTERM, then SIGKILL if it has not exited within `grace`.
async fn stop(child: &mut tokio::process::Child, pid: Option<i32>, grace: Duration) {
    // The child leads its own process group (pgid = its pid): signal the whole group.
    let group = |sig: i32| {
        if let Some(pid) = pid {
            // SAFETY: kill(2) on the process group of a child this process started and has not
            // reaped yet.
            unsafe {
                libc::kill(-pid, sig);
            }
        }
    };
    group(libc::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        group(libc::SIGKILL);
        let _ = child.kill().await;
    }
}

/// The exit status to pass on: the child's code, or 128 + the signal that ended it.
fn exit_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c.clamp(0, 255) as u8,
        (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
        (None, None) => 1,
    }
}
