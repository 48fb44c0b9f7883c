//! First boot: a node whose data dir is new votes only after every other member confirms it
//! never exchanged Paxos messages with this node id (docs/design.md).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rampart_storage::Durability;

use crate::{MmNode, INITIALIZED_META_KEY};

impl MmNode {
    /// Resolves once the first-boot check passed (at once for a data dir that has voted
    /// before), or with the fatal error that stopped the node. While it waits it logs, every
    /// 5 s, which members have not answered yet: on first boot every member must answer once.
    pub async fn wait_first_boot(&self) -> Result<(), String> {
        let mut last_log = Instant::now();
        loop {
            if let Some(r) = self.shared.fatal.lock().clone() {
                return Err(r);
            }
            if !self.shared.in_probation() {
                return Ok(());
            }
            if last_log.elapsed() >= Duration::from_secs(5) {
                let confirmed = self.first_boot_confirmed.lock().clone();
                let missing: Vec<u64> = self.shared.peers.keys().filter(|p| !confirmed.contains(p)).copied().collect();
                tracing::warn!(
                    ?missing,
                    "first boot of this data dir: waiting for every member to confirm it never saw this node"
                );
                last_log = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// First boot: a node whose data dir is new must not vote until every other member says it
    /// never exchanged Paxos messages with this node id. If one has, this node's data was lost
    /// or replaced, and voting with forgotten promises and values could lose acknowledged
    /// writes: the node stops with that error.
    pub(crate) async fn first_boot_answer(&self, peer: u64, seen_you: bool) {
        if seen_you {
            self.shared.set_fatal(format!(
                "node {} has a new data dir, but node {peer} has exchanged Paxos messages with node {} before: \
                 this node's data was lost or replaced, and it must not vote with forgotten promises \
                 (restore its data dir, or run the cluster without it; membership changes are not built yet)",
                self.cfg.id, self.cfg.id
            ));
            return;
        }
        let done = {
            let mut confirmed = self.first_boot_confirmed.lock();
            confirmed.insert(peer);
            self.shared.peers.keys().all(|p| confirmed.contains(p))
        };
        if done && self.shared.in_probation() {
            let store = self.store.clone();
            let r = tokio::task::spawn_blocking(move || {
                store.write(Durability::Immediate, |b| b.meta_put(INITIALIZED_META_KEY, b"1"))
            })
            .await;
            match r {
                Ok(Ok(())) => {
                    self.shared.probation.store(false, Ordering::Release);
                    tracing::info!("first-boot check passed: no member has seen this node before; voting");
                }
                Ok(Err(e)) => self.shared.set_fatal(format!("cannot record the first-boot check: {e}")),
                Err(e) => self.shared.set_fatal(format!("first-boot check task failed: {e}")),
            }
        }
    }
}
