//! Watches in leader mode, on in-process clusters: history replay then live events with no
//! gap and no duplicate, the same events on every node, compaction, cut-off of a slow watcher,
//! and a watch from a revision not applied yet.

mod common;

use common::*;

use std::time::{Duration, Instant};

use rampart_kv::{Command, Event, EventStream, Replica, SetCond, Ttl, WatchError, WatchFilter, WatchMessage};
use rampart_raft::node::RaftNode;

const PROGRESS: Duration = Duration::from_millis(200);

fn set(key: &str) -> Command {
    Command::Set {
        key: key.into(),
        value: key.as_bytes().to_vec(),
        cond: SetCond::Always,
        return_old: false,
        ttl: Ttl::Clear,
    }
}

/// Writes `keys` one command each, returning each write's revision.
async fn write_all(l: &RaftNode, keys: impl IntoIterator<Item = String>) -> Vec<u64> {
    let mut revs = Vec::new();
    for k in keys {
        revs.push(l.write(set(&k)).await.unwrap().revision);
    }
    revs
}

/// Events from `s` until `done` says enough, within [`WAIT`]; the cut-off (if any) ends it.
async fn collect(
    s: &mut Box<dyn EventStream>,
    mut done: impl FnMut(&[Event]) -> bool,
) -> (Vec<Event>, Option<(u64, String)>, Vec<u64>) {
    let deadline = Instant::now() + WAIT;
    let (mut events, mut progress) = (Vec::new(), Vec::new());
    while !done(&events) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.next()).await.expect("timed out waiting for watch events") {
            Some(WatchMessage::Events(es)) => events.extend(es),
            Some(WatchMessage::Progress { revision }) => progress.push(revision),
            Some(WatchMessage::CutOff { resume_from, reason }) => {
                return (events, Some((resume_from, reason)), progress)
            }
            None => panic!("the stream ended without a cut-off"),
        }
    }
    (events, None, progress)
}

fn assert_in_order_once(events: &[Event]) {
    assert!(
        events.windows(2).all(|w| w[0].revision < w[1].revision),
        "revisions strictly increase (one key per write)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_then_live_on_every_node_with_no_gap_or_duplicate() {
    let c = start(3).await;
    let l = leader(&c.nodes).await;
    let mut revs = write_all(&l, (0..20).map(|i| format!("w/{i:03}"))).await;
    l.write(set("other")).await.unwrap();
    // One watch per node from revision 1, started while writes go on.
    let mut streams = Vec::new();
    for n in &c.nodes {
        streams.push(n.watch(WatchFilter::Prefix(b"w/".to_vec()), Some(1), PROGRESS).await.unwrap());
    }
    let writer = {
        let l = l.clone();
        tokio::spawn(async move { write_all(&l, (20..60).map(|i| format!("w/{i:03}"))).await })
    };
    let mut per_node = Vec::new();
    for s in &mut streams {
        let (events, cut, _) = collect(s, |es| es.len() >= 60).await;
        assert!(cut.is_none(), "{cut:?}");
        per_node.push(events);
    }
    revs.extend(writer.await.unwrap());
    for events in &per_node {
        assert_in_order_once(events);
        let keys: Vec<String> = events.iter().map(|e| String::from_utf8(e.key.clone()).unwrap()).collect();
        assert_eq!(keys, (0..60).map(|i| format!("w/{i:03}")).collect::<Vec<_>>(), "every write once, in order");
        assert_eq!(events.iter().map(|e| e.revision).collect::<Vec<_>>(), revs, "each at its write's revision");
        assert!(events.iter().all(|e| e.value == e.key), "values as written");
        assert_eq!(events, &per_node[0], "every node yields the same events");
    }
    // Progress follows: nothing pending, so a progress at the applied index arrives.
    let last = *revs.last().unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let m =
            tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), streams[1].next()).await.unwrap();
        match m {
            Some(WatchMessage::Progress { revision }) if revision >= last => break,
            Some(WatchMessage::Progress { .. }) => {}
            other => panic!("only progress expected, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_history_answers_the_oldest_kept_revision() {
    let c = start(1).await;
    let l = leader(&c.nodes).await;
    l.watch_hub().set_retention(5);
    let revs = write_all(&l, (0..20).map(|i| format!("k{i}"))).await;
    let last = *revs.last().unwrap();
    let err = match l.watch(WatchFilter::Prefix(Vec::new()), Some(1), PROGRESS).await {
        Err(e) => e,
        Ok(_) => panic!("revision 1 must be compacted"),
    };
    let WatchError::Compacted { requested, oldest } = err else { panic!("{err}") };
    assert_eq!(requested, 1);
    assert_eq!(oldest, last - 4, "the last five revisions are kept");
    // The rows below it are gone too (trimmed in bounded steps, one per apply).
    let first = l.store().read(|v| v.history_first()).unwrap().unwrap();
    assert!(first >= oldest, "history starts at {first}, oldest readable is {oldest}");
    let mut s = l.watch(WatchFilter::Prefix(Vec::new()), Some(oldest), PROGRESS).await.unwrap();
    let (events, cut, _) = collect(&mut s, |es| es.len() >= 5).await;
    assert!(cut.is_none());
    assert_eq!(events.iter().map(|e| e.revision).collect::<Vec<_>>(), revs[15..].to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_does_not_read_is_cut_off_with_where_to_resume() {
    let c = start(1).await;
    let l = leader(&c.nodes).await;
    let mut s = l.watch(WatchFilter::Prefix(b"s/".to_vec()), None, Duration::from_secs(60)).await.unwrap();
    let n = rampart_raft::watch::WATCH_BUFFER_MESSAGES + 50;
    let revs = write_all(&l, (0..n).map(|i| format!("s/{i:04}"))).await;
    let (events, cut, _) = collect(&mut s, |_| false).await;
    let (resume_from, reason) = cut.expect("a cut-off");
    assert!(reason.contains("WATCH_BUFFER_MESSAGES"), "{reason}");
    assert!(events.len() >= rampart_raft::watch::WATCH_BUFFER_MESSAGES - 1 && events.len() < n, "{}", events.len());
    assert_in_order_once(&events);
    assert!(events.iter().all(|e| e.revision < resume_from), "everything before resume_from was yielded");
    assert!(s.next().await.is_none(), "the stream ends after its cut-off");
    // Resuming from there yields the rest, nothing twice.
    let mut again = l.watch(WatchFilter::Prefix(b"s/".to_vec()), Some(resume_from), PROGRESS).await.unwrap();
    let want = n - events.len();
    let (rest, cut, _) = collect(&mut again, |es| es.len() >= want).await;
    assert!(cut.is_none());
    let all: Vec<u64> = events.iter().chain(&rest).map(|e| e.revision).collect();
    assert_eq!(all, revs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_revision_not_applied_yet_waits_for_it_and_the_limit_is_named() {
    let c = start(1).await;
    let l = leader(&c.nodes).await;
    let applied = l.write(set("first")).await.unwrap().revision;
    let mut s = l.watch(WatchFilter::Key(b"x".to_vec()), Some(applied + 3), PROGRESS).await.unwrap();
    let revs = write_all(&l, (0..6).map(|_| "x".to_string())).await;
    let (events, cut, _) = collect(&mut s, |es| es.len() >= 4).await;
    assert!(cut.is_none());
    let got: Vec<u64> = events.iter().map(|e| e.revision).collect();
    assert_eq!(got, revs.iter().copied().filter(|r| *r >= applied + 3).collect::<Vec<_>>());
    // The concurrent-watch limit.
    let mut held = Vec::new();
    for _ in 1..rampart_raft::watch::WATCHES_MAX {
        held.push(l.watch(WatchFilter::Key(b"y".to_vec()), None, PROGRESS).await.unwrap());
    }
    let err = match l.watch(WatchFilter::Key(b"y".to_vec()), None, PROGRESS).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("over WATCHES_MAX"),
    };
    assert!(err.contains("WATCHES_MAX"), "{err}");
    drop(held);
    let deadline = Instant::now() + WAIT;
    while l.watch_hub().active() > 1 {
        assert!(Instant::now() < deadline, "dropped watches give their slots back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(l.watch(WatchFilter::Key(b"y".to_vec()), None, PROGRESS).await.is_ok());
}
