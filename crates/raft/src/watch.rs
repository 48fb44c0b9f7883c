//! Watches in leader mode: the history every node keeps of what it applied, and the streams
//! that replay it and then follow new applies.
//!
//! History: each apply stores its events ([`crate::state_machine::apply`]) in the store's
//! history table in the same transaction as the write, keyed by revision (the log index) and
//! sequence. At most [`WATCH_HISTORY_REVISIONS`] revisions are kept (per node, by default): each
//! apply moves the oldest kept revision ([`HISTORY_OLDEST_META`]) up and removes at most
//! [`HISTORY_TRIM_ROWS_PER_APPLY`] rows below it. A snapshot install leaves the node with no
//! history before the snapshot: its oldest becomes the snapshot's last index + 1 (history is not
//! in snapshots).
//!
//! Live: after each apply commits, its events go to a bounded broadcast ([`WatchHub`]). A watch
//! subscribes first, then replays history up to the applied index (on the blocking pool, in
//! bounded pages), then follows the broadcast, dropping what the replay already yielded (by
//! revision). If the broadcast outran it, it replays from history again. A watcher that does
//! not read its own bounded buffer fast enough is cut off ([`WatchMessage::CutOff`]) with the
//! revision to resume from: never unbounded memory, never a silent skip.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rampart_kv::{BoxFuture, Event, EventStream, KvError, WatchError, WatchFilter, WatchMessage};
use rampart_storage::{Batch, Store, View};
use tokio::sync::{broadcast, mpsc};

/// Revisions of history a node keeps by default (`--watch-history-revisions`): a watch can start
/// from any of the last this many log indexes this node applied.
pub const WATCH_HISTORY_REVISIONS: u64 = 100_000;

/// Most history rows one apply removes when trimming, so no transaction deletes an unbounded
/// range; every apply trims, so the table catches up with its retention.
pub const HISTORY_TRIM_ROWS_PER_APPLY: usize = 4_096;

/// The meta key of the oldest revision still readable from history (8 little-endian bytes;
/// absent: 1, the whole log).
pub const HISTORY_OLDEST_META: &str = "watch_history_oldest";

/// Applied batches the live broadcast holds for watchers that have not taken them yet; a
/// watcher further behind replays from history instead.
pub const WATCH_HUB_CAPACITY: usize = 1_024;

/// Most watches one node runs at once; more are refused with an error naming this limit.
pub const WATCHES_MAX: usize = 1_024;

/// Messages a watch buffers for its consumer; a live watcher whose consumer leaves it full is
/// cut off.
pub const WATCH_BUFFER_MESSAGES: usize = 256;

/// Bytes (keys and values) a watch buffers for its consumer; past it the watcher is cut off.
pub const WATCH_BUFFER_BYTES: usize = 8 << 20;

/// Most history rows one replay page reads.
pub const WATCH_REPLAY_PAGE_ROWS: usize = 1_024;

/// A replay page ends once its rows weigh this many bytes.
pub const WATCH_REPLAY_PAGE_BYTES: usize = 1 << 20;

/// The shortest progress interval a watch accepts (shorter ones are raised to it).
pub const WATCH_PROGRESS_MIN: Duration = Duration::from_millis(100);

/// What the state machine tells watchers.
#[derive(Clone, Debug)]
enum Applied {
    /// Entries up to `last` were applied and committed, making `events`.
    Batch { last: u64, events: Arc<Vec<Event>> },
    /// A snapshot up to `last` was installed: this node has no history up to it.
    Installed { last: u64 },
    /// The node is shutting down.
    Shutdown,
}

/// The live side of watches on one node: the applied index and the broadcast of applies.
#[derive(Debug)]
pub struct WatchHub {
    tx: broadcast::Sender<Applied>,
    applied: AtomicU64,
    active: AtomicUsize,
    retention: AtomicU64,
}

impl WatchHub {
    pub fn new(applied: u64) -> Arc<Self> {
        Arc::new(WatchHub {
            tx: broadcast::channel(WATCH_HUB_CAPACITY).0,
            applied: AtomicU64::new(applied),
            active: AtomicUsize::new(0),
            retention: AtomicU64::new(WATCH_HISTORY_REVISIONS),
        })
    }

    /// The highest log index applied and committed to the store.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Revisions of history kept (at least 1).
    pub fn retention(&self) -> u64 {
        self.retention.load(Ordering::Relaxed)
    }

    /// Sets the revisions of history kept (`--watch-history-revisions`; at least 1).
    pub fn set_retention(&self, revisions: u64) {
        self.retention.store(revisions.max(1), Ordering::Relaxed);
    }

    /// Watches running now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// After the apply of entries up to `last` committed.
    pub(crate) fn publish_applied(&self, last: u64, events: Vec<Event>) {
        self.applied.fetch_max(last, Ordering::AcqRel);
        let _ = self.tx.send(Applied::Batch { last, events: Arc::new(events) });
    }

    /// After a snapshot up to `last` was installed.
    pub(crate) fn publish_installed(&self, last: u64) {
        self.applied.fetch_max(last, Ordering::AcqRel);
        let _ = self.tx.send(Applied::Installed { last });
    }

    /// Ends every watch (node shutdown).
    pub fn close(&self) {
        let _ = self.tx.send(Applied::Shutdown);
    }
}

/// The oldest revision history can still replay, as `view` sees it.
pub fn history_oldest(view: &View) -> rampart_storage::Result<u64> {
    Ok(view.meta_get(HISTORY_OLDEST_META)?.and_then(|b| b.try_into().ok()).map_or(1, u64::from_le_bytes).max(1))
}

fn batch_oldest(batch: &Batch<'_>) -> rampart_storage::Result<u64> {
    Ok(batch.meta_get(HISTORY_OLDEST_META)?.and_then(|b| b.try_into().ok()).map_or(1, u64::from_le_bytes).max(1))
}

/// In an apply's transaction, once entries up to `applied` were applied: keeps the last
/// `retention` revisions, moving the oldest readable revision up and removing at most
/// [`HISTORY_TRIM_ROWS_PER_APPLY`] rows below it.
pub(crate) fn trim(batch: &mut Batch<'_>, applied: u64, retention: u64) -> rampart_storage::Result<()> {
    let oldest = batch_oldest(batch)?;
    let want = applied.saturating_sub(retention.max(1)) + 1;
    if want > oldest {
        batch.meta_put(HISTORY_OLDEST_META, &want.to_le_bytes())?;
    }
    batch.history_trim(want.max(oldest), HISTORY_TRIM_ROWS_PER_APPLY)?;
    Ok(())
}

/// In a snapshot install's transaction: history starts after the snapshot's last index.
pub(crate) fn reset_after_install(batch: &mut Batch<'_>, last: u64) -> rampart_storage::Result<()> {
    let oldest = batch_oldest(batch)?.max(last + 1);
    batch.meta_put(HISTORY_OLDEST_META, &oldest.to_le_bytes())
}

/// A watch slot, given back when the watch ends.
struct Slot(Arc<WatchHub>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

fn take_slot(hub: &Arc<WatchHub>) -> Result<Slot, WatchError> {
    let taken = hub.active.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < WATCHES_MAX).then_some(n + 1));
    match taken {
        Ok(_) => Ok(Slot(hub.clone())),
        Err(n) => Err(WatchError::Kv(KvError::TryAgain(format!(
            "this node already runs {n} watches, the most it allows (WATCHES_MAX = {WATCHES_MAX}); retry later or \
             watch through another node"
        )))),
    }
}

/// Starts a watch over `store`'s history and `hub`'s live applies.
pub async fn start(
    store: Arc<Store>,
    hub: Arc<WatchHub>,
    filter: WatchFilter,
    from_revision: Option<u64>,
    progress_every: Duration,
) -> Result<Box<dyn EventStream>, WatchError> {
    let slot = take_slot(&hub)?;
    // Subscribed before the applied index is read: every apply after it reaches this receiver.
    let live = hub.tx.subscribe();
    let applied = hub.applied();
    let from = from_revision.unwrap_or(applied + 1).max(1);
    let oldest = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.read(history_oldest))
            .await
            .map_err(|e| KvError::Internal(format!("watch start task failed: {e}")))?
            .map_err(|e| KvError::Internal(e.to_string()))?
    };
    if from < oldest {
        return Err(WatchError::Compacted { requested: from, oldest });
    }
    let (tx, rx) = mpsc::channel(WATCH_BUFFER_MESSAGES);
    let buffered = Arc::new(AtomicUsize::new(0));
    let end = Arc::new(Mutex::new(None));
    let runner = Runner {
        store,
        hub,
        filter,
        next: from,
        seen: applied.min(from - 1),
        tx,
        buffered: buffered.clone(),
        end: end.clone(),
        progress_every: progress_every.max(WATCH_PROGRESS_MIN),
        last_progress: Instant::now(),
        _slot: slot,
    };
    tokio::spawn(runner.run(live));
    Ok(Box::new(Stream { rx, end, buffered, done: false }))
}

/// The bytes a message holds, for [`WATCH_BUFFER_BYTES`].
fn weight(m: &WatchMessage) -> usize {
    match m {
        WatchMessage::Events(es) => es.iter().map(|e| e.key.len() + e.value.len() + 48).sum(),
        _ => 48,
    }
}

/// The consumer's end of a watch.
struct Stream {
    rx: mpsc::Receiver<WatchMessage>,
    end: Arc<Mutex<Option<WatchMessage>>>,
    buffered: Arc<AtomicUsize>,
    done: bool,
}

impl EventStream for Stream {
    fn next(&mut self) -> BoxFuture<'_, Option<WatchMessage>> {
        Box::pin(async move {
            if self.done {
                return None;
            }
            match self.rx.recv().await {
                Some(m) => {
                    self.buffered.fetch_sub(weight(&m), Ordering::AcqRel);
                    Some(m)
                }
                None => {
                    self.done = true;
                    self.end.lock().unwrap_or_else(|p| p.into_inner()).take()
                }
            }
        })
    }
}

/// Why a phase of the runner stopped.
enum Stop {
    /// The stream ends with this message.
    End(WatchMessage),
    /// The consumer went away.
    Gone,
    /// The live broadcast outran the runner: replay from history.
    Replay,
}

/// The producing side of a watch (one task).
struct Runner {
    store: Arc<Store>,
    hub: Arc<WatchHub>,
    filter: WatchFilter,
    /// The next revision to yield: every matching event below it has been queued.
    next: u64,
    /// The highest applied index the runner has gone through.
    seen: u64,
    tx: mpsc::Sender<WatchMessage>,
    buffered: Arc<AtomicUsize>,
    end: Arc<Mutex<Option<WatchMessage>>>,
    progress_every: Duration,
    last_progress: Instant,
    _slot: Slot,
}

impl Runner {
    async fn run(mut self, mut live: broadcast::Receiver<Applied>) {
        let stop = loop {
            if let Err(stop) = self.replay().await {
                break stop;
            }
            match self.follow(&mut live).await {
                Stop::Replay => continue,
                stop => break stop,
            }
        };
        if let Stop::End(m) = stop {
            *self.end.lock().unwrap_or_else(|p| p.into_inner()) = Some(m);
        }
        // Dropping the sender lets the consumer drain the buffer, then take the end message.
    }

    fn cut_off(&self, reason: String) -> Stop {
        Stop::End(WatchMessage::CutOff { resume_from: self.next, reason })
    }

    /// Queues `m`, waiting for room (replay reads at the consumer's pace).
    async fn send(&mut self, m: WatchMessage) -> Result<(), Stop> {
        self.buffered.fetch_add(weight(&m), Ordering::AcqRel);
        self.tx.send(m).await.map_err(|_| Stop::Gone)
    }

    /// Queues `m` without waiting: a full buffer cuts the watcher off at `resume_from`.
    fn offer(&mut self, m: WatchMessage, resume_from: u64) -> Result<(), Stop> {
        let w = weight(&m);
        let full = |why: String| {
            Stop::End(WatchMessage::CutOff {
                resume_from,
                reason: format!("the watcher fell behind: {why}; resume from revision {resume_from}"),
            })
        };
        if self.buffered.load(Ordering::Acquire).saturating_add(w) > WATCH_BUFFER_BYTES {
            return Err(full(format!("its buffer holds over WATCH_BUFFER_BYTES ({WATCH_BUFFER_BYTES}) bytes")));
        }
        self.buffered.fetch_add(w, Ordering::AcqRel);
        match self.tx.try_send(m) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(m)) => {
                self.buffered.fetch_sub(weight(&m), Ordering::AcqRel);
                Err(full(format!("its buffer holds WATCH_BUFFER_MESSAGES ({WATCH_BUFFER_MESSAGES}) messages")))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Stop::Gone),
        }
    }

    /// Replays history from `next` up to the applied index, in bounded pages.
    async fn replay(&mut self) -> Result<(), Stop> {
        let upto = self.hub.applied();
        let mut cursor = (self.next, 0u32);
        while cursor.0 <= upto {
            let store = self.store.clone();
            let page = tokio::task::spawn_blocking(move || {
                store.read(|v| {
                    let oldest = history_oldest(v)?;
                    if cursor.0 < oldest {
                        return Ok(Err(oldest));
                    }
                    v.history_range(cursor, upto, WATCH_REPLAY_PAGE_ROWS, WATCH_REPLAY_PAGE_BYTES).map(Ok)
                })
            })
            .await;
            let (rows, more) = match page {
                Ok(Ok(Ok(page))) => page,
                Ok(Ok(Err(oldest))) => {
                    return Err(self.cut_off(format!(
                        "history before revision {oldest} was compacted (or replaced by a snapshot) while this watch \
                         read it; revision {} is no longer kept on this node",
                        cursor.0
                    )))
                }
                Ok(Err(e)) => return Err(self.cut_off(format!("cannot read watch history: {e}"))),
                Err(e) => return Err(self.cut_off(format!("watch history read task failed: {e}"))),
            };
            let mut events = Vec::new();
            for (rev, seq, bytes) in &rows {
                let event: Event = match rmp_serde::from_slice(bytes) {
                    Ok(e) => e,
                    Err(e) => {
                        return Err(self.cut_off(format!("history row {rev}.{seq} is malformed: {e}")));
                    }
                };
                if self.filter.matches(&event.key) {
                    events.push(event);
                }
                cursor = (*rev, seq.saturating_add(1));
            }
            if !more {
                cursor = (upto + 1, 0);
            }
            if !events.is_empty() {
                self.send(WatchMessage::Events(events)).await?;
            }
            // Every revision below the cursor's is complete.
            self.next = self.next.max(cursor.0);
            self.seen = self.seen.max(cursor.0 - 1);
            if more && self.last_progress.elapsed() >= self.progress_every {
                self.last_progress = Instant::now();
                self.send(WatchMessage::Progress { revision: self.seen }).await?;
            }
            if !more {
                break;
            }
        }
        self.seen = self.seen.max(upto.min(self.next - 1));
        Ok(())
    }

    /// Follows live applies until the broadcast outruns it (then [`Stop::Replay`]) or the
    /// stream ends.
    async fn follow(&mut self, live: &mut broadcast::Receiver<Applied>) -> Stop {
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::from_std(self.last_progress) + self.progress_every,
            self.progress_every,
        );
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                m = live.recv() => match m {
                    Ok(Applied::Batch { last, events }) => {
                        if last < self.next {
                            self.seen = self.seen.max(last);
                            continue;
                        }
                        let resume_from = self.next;
                        let matching: Vec<Event> = events
                            .iter()
                            .filter(|e| e.revision >= self.next && self.filter.matches(&e.key))
                            .cloned()
                            .collect();
                        self.next = last + 1;
                        self.seen = self.seen.max(last);
                        if !matching.is_empty() {
                            if let Err(stop) = self.offer(WatchMessage::Events(matching), resume_from) {
                                return stop;
                            }
                        }
                    }
                    Ok(Applied::Installed { last }) => {
                        if last >= self.next {
                            return self.cut_off(format!(
                                "this node installed a snapshot up to revision {last} and has no history before \
                                 revision {}; resume from revision {} on a node that still has it",
                                last + 1,
                                self.next
                            ));
                        }
                    }
                    Ok(Applied::Shutdown) | Err(broadcast::error::RecvError::Closed) => {
                        return self.cut_off(format!(
                            "the node is shutting down; resume from revision {} on another node",
                            self.next
                        ));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => return Stop::Replay,
                },
                _ = ticker.tick() => {
                    self.last_progress = Instant::now();
                    let next = self.next;
                    if let Err(stop) = self.offer(WatchMessage::Progress { revision: self.seen }, next) {
                        return stop;
                    }
                }
                _ = self.tx.closed() => return Stop::Gone,
            }
        }
    }
}
