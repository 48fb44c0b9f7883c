//! End-to-end tests of leases with real `rampart server` processes (leader mode): keys attached
//! to a lease survive a SIGKILL of the leader while keepalives go on through the new leader;
//! once keepalives stop, the keys disappear from every node (the restarted one too); a revoke
//! removes every key at once.
//!
//! Time here is the processes' real clock: the tests never sleep for it, they wait on
//! conditions with deadlines (keepalives counted, keys gone).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rampart_client::Client;

/// The lease TTL: the shortest allowed, so the expiry comes soon once keepalives stop.
const TTL_MS: u64 = rampart_kv::lease::LEASE_TTL_MIN_MS;
/// Between keepalives: well inside the TTL.
const KEEPALIVE_EVERY: Duration = Duration::from_millis(400);
/// Keepalives that must succeed after the leader is killed: together longer than two TTLs.
const KEEPALIVES_AFTER_KILL: u64 = 12;
/// How long a condition may take before the test fails.
const WAIT: Duration = Duration::from_secs(60);

fn client(c: &Cluster) -> Client {
    let endpoints = c.specs.keys().map(|id| c.http(*id)).collect();
    Client::new(endpoints, Duration::from_secs(5)).unwrap()
}

/// True when `key` is absent on node `id` by its own (stale) state.
async fn gone_on(c: &Cluster, id: u64, key: &str) -> bool {
    let url = format!("{}/v1/kv/{key}?consistency=stale", c.http(id));
    matches!(http_request(Method::GET, &url, "", Duration::from_secs(2)).await, Ok(r) if r.status == StatusCode::NOT_FOUND)
}

/// True when `key` is present on node `id` by its own state.
async fn present_on(c: &Cluster, id: u64, key: &str) -> bool {
    let url = format!("{}/v1/kv/{key}?consistency=stale", c.http(id));
    matches!(http_request(Method::GET, &url, "", Duration::from_secs(2)).await, Ok(r) if r.status == StatusCode::OK)
}

async fn wait_gone(c: &Cluster, ids: &[u64], keys: &[&str]) {
    for &id in ids {
        for &key in keys {
            wait_for(&format!("{key} gone on node {id}"), WAIT, || async { gone_on(c, id, key).await.then_some(()) })
                .await;
        }
    }
}

/// Keepalives every [`KEEPALIVE_EVERY`] until `stop`, counting successes; a lease found gone
/// is recorded in `lost`.
fn keep_alive(cl: Client, id: u64, stop: Arc<AtomicBool>, ok: Arc<AtomicU64>, lost: Arc<AtomicBool>) {
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            match cl.lease_keepalive(id).await {
                Ok(Some(_)) => {
                    ok.fetch_add(1, Ordering::SeqCst);
                }
                Ok(None) => {
                    lost.store(true, Ordering::SeqCst);
                    return;
                }
                // A node down or an election: the next round tries again.
                Err(_) => {}
            }
            tokio::time::sleep(KEEPALIVE_EVERY).await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_keys_survive_a_leader_kill_and_go_everywhere_when_keepalives_stop() {
    let mut c = Cluster::start(3, &[]);
    let leader = wait_leader(&c, &[1, 2, 3]).await;
    let cl = client(&c);
    let lease = wait_for("a lease granted", WAIT, || async { cl.lease_grant(TTL_MS).await.ok() }).await;
    assert_eq!(lease.ttl_ms, TTL_MS);
    let keys = ["lease/a", "lease/b", "lease/c"];
    for k in keys {
        cl.put_with_lease(k, "held", lease.id).await.unwrap();
    }
    let info = cl.lease_info(lease.id).await.unwrap().unwrap();
    assert_eq!(info.keys, keys.iter().map(|k| k.as_bytes().to_vec()).collect::<Vec<_>>());
    assert!(info.remaining_ms <= TTL_MS);

    let (stop, ok, lost) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    keep_alive(cl.clone(), lease.id, stop.clone(), ok.clone(), lost.clone());

    c.kill(leader);
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    let new_leader = wait_leader(&c, &rest).await;
    assert_ne!(new_leader, leader);
    let before = ok.load(Ordering::SeqCst);
    wait_for("keepalives through the new leader", WAIT, || async {
        assert!(!lost.load(Ordering::SeqCst), "the lease was lost while kept alive across the leader change");
        (ok.load(Ordering::SeqCst) >= before + KEEPALIVES_AFTER_KILL).then_some(())
    })
    .await;
    for id in &rest {
        for k in keys {
            assert!(present_on(&c, *id, k).await, "{k} gone on node {id} while its lease was kept alive");
        }
    }
    assert!(cl.lease_info(lease.id).await.unwrap().is_some());

    // Keepalives stop: the lease runs out and its keys go from every node.
    stop.store(true, Ordering::SeqCst);
    wait_gone(&c, &rest, &keys).await;
    wait_for("the lease gone", WAIT, || async { cl.lease_info(lease.id).await.ok().flatten().is_none().then_some(()) })
        .await;
    assert_eq!(cl.lease_keepalive(lease.id).await.unwrap(), None, "a lease that ran out cannot be renewed");
    let late = cl.put_with_lease("lease/late", "x", lease.id).await;
    assert!(matches!(&late, Err(rampart_client::Error::Server { status: 400, .. })), "{late:?}");
    // The killed node comes back and agrees.
    c.spawn(leader);
    wait_gone(&c, &[leader], &keys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_removes_every_key_at_once() {
    let c = Cluster::start(3, &[]);
    wait_leader(&c, &[1, 2, 3]).await;
    let cl = client(&c);
    // Long enough never to run out during the test: only the revoke removes the keys.
    let lease = wait_for("a lease granted", WAIT, || async { cl.lease_grant(600_000).await.ok() }).await;
    let keys: Vec<String> = (0..10).map(|i| format!("rev/{i}")).collect();
    for k in &keys {
        cl.put_with_lease(k, "v", lease.id).await.unwrap();
    }
    // A key written again without the lease is detached and stays.
    cl.put("rev/0", "mine").await.unwrap();
    assert_eq!(cl.lease_info(lease.id).await.unwrap().unwrap().keys.len(), 9);
    assert!(cl.lease_revoke(lease.id).await.unwrap());
    // Linearizable reads right after the revoke: every leased key is gone already.
    for k in &keys[1..] {
        assert_eq!(cl.get(k).await.unwrap(), None, "{k} survived the revoke");
    }
    assert_eq!(cl.get("rev/0").await.unwrap().unwrap().value, b"mine");
    let all: Vec<&str> = keys[1..].iter().map(String::as_str).collect();
    wait_gone(&c, &[1, 2, 3], &all).await;
    assert!(!cl.lease_revoke(lease.id).await.unwrap(), "a second revoke finds nothing");
    assert_eq!(cl.lease_info(lease.id).await.unwrap(), None);
    // The limits answer clearly.
    let short = cl.lease_grant(10).await;
    assert!(
        matches!(&short, Err(rampart_client::Error::Server { status: 400, message, .. }) if message.contains("LEASE_TTL_MIN_MS")),
        "{short:?}"
    );
}
