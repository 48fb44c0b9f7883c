//! Worker threads for `--threads N` with N > 1: one single-threaded tokio
//! runtime per thread, sharing nothing on the request path.
//!
//! Thread 0 is the process's main runtime: it accepts connections, runs
//! health checks, the admin API and reloads, and serves its share of client
//! connections. Every accepted connection is handed, round robin, to one
//! worker and lives there to its end: its socket is registered with that
//! worker's own epoll instance, its backend connections come from that
//! worker's shard of each backend's pool ([`crate::pool`] asks [`index`]),
//! and no task moves between threads. What stays shared is counters,
//! backend state and the balancer (atomics and short locks).
//!
//! Measured against tokio's multi-threaded runtime (one epoll instance that
//! one worker at a time polls, work stealing between the others) in
//! docs/lb.md, "Performance notes".
//!
//! It must never hand a connection to a worker that has stopped: workers stop
//! only after the listeners did ([`Workers::stop`] after `Lb::shutdown`).

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Worker threads in this process (1 unless [`Workers::start`] made more);
/// pools are split into this many shards.
static COUNT: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// This thread's worker index: 0 on the main thread and on any thread
    /// [`Workers::start`] did not make.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The worker the calling thread is (0 outside extra workers).
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// Worker threads in this process (at least 1).
pub fn count() -> usize {
    COUNT.load(Relaxed).max(1)
}

struct Extra {
    handle: Handle,
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

/// The extra workers (1 to N-1) and where the next connection goes.
pub struct Workers {
    extra: Mutex<Vec<Extra>>,
    handles: Vec<Handle>,
    next: AtomicUsize,
}

impl Workers {
    /// Starts `threads - 1` extra worker threads (the caller's runtime is
    /// worker 0). Call before building any frontend, so that pools get one
    /// shard per worker.
    pub fn start(threads: usize) -> std::io::Result<Workers> {
        assert!(threads >= 1, "at least one worker");
        let mut extra = Vec::with_capacity(threads - 1);
        for i in 1..threads {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let handle = rt.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new().name(format!("rampart-lb-{i}")).spawn(move || {
                INDEX.with(|c| c.set(i));
                // Serves whatever is spawned onto it until told to stop.
                let _ = rt.block_on(stopped);
                rt.shutdown_timeout(Duration::from_millis(STOP_GRACE_MS));
            })?;
            extra.push(Extra { handle, stop, thread });
        }
        COUNT.store(threads, Relaxed);
        let handles = extra.iter().map(|e| e.handle.clone()).collect();
        Ok(Workers { extra: Mutex::new(extra), handles, next: AtomicUsize::new(0) })
    }

    /// Workers, this thread's included.
    pub fn len(&self) -> usize {
        self.handles.len() + 1
    }

    /// Never empty: the calling thread is a worker.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Runs `fut` on the next worker, round robin (worker 0: the calling
    /// runtime). A socket the future registers when first polled belongs to
    /// the worker it runs on.
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Relaxed) % self.len();
        if i == 0 {
            tokio::spawn(fut);
        } else {
            self.handles[i - 1].spawn(fut);
        }
    }

    /// Stops the extra workers, each within [`STOP_GRACE_MS`] for the
    /// connections it still serves.
    pub fn stop(&self) {
        let extra = std::mem::take(&mut *self.extra.lock().unwrap_or_else(|p| p.into_inner()));
        let threads: Vec<JoinHandle<()>> = extra
            .into_iter()
            .map(|e| {
                let _ = e.stop.send(());
                e.thread
            })
            .collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

/// How long an extra worker waits at exit for tasks it still runs.
pub const STOP_GRACE_MS: u64 = 1_000;
