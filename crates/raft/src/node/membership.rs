//! Membership changes: add a node as a learner until it has caught up, then promote it to
//! voter; remove voters and learners. Only the leader changes membership.

use std::collections::BTreeSet;

use openraft::{ChangeMembers, ServerState};

use rampart_kv::MembershipError;

use super::{RaftNode, LEARNER_CATCH_UP_TIMEOUT};
use crate::types::{NodeId, NodeInfo};

impl RaftNode {
    /// Adds a node: as a learner until it has caught up, then as a voter.
    pub async fn add_member(&self, id: NodeId, info: NodeInfo) -> Result<(), MembershipError> {
        self.require_leader()?;
        self.infos.write().insert(id, info.clone());
        match tokio::time::timeout(LEARNER_CATCH_UP_TIMEOUT, self.raft.add_learner(id, info, true)).await {
            Ok(r) => r.map_err(|e| MembershipError::Invalid(format!("adding learner {id}: {e}")))?,
            Err(_) => {
                return Err(MembershipError::Invalid(format!(
                    "node {id} was added as a learner but did not catch up within {} s; it stays a learner (check that it runs and is reachable at its peer address)",
                    LEARNER_CATCH_UP_TIMEOUT.as_secs()
                )))
            }
        };
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| MembershipError::Invalid(format!("promoting {id} to voter: {e}")))?;
        Ok(())
    }

    /// Removes a node from the voters and from the cluster.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), MembershipError> {
        self.require_leader()?;
        let m = self.raft.metrics().borrow().membership_config.clone();
        if m.membership().get_node(&id).is_none() {
            return Err(MembershipError::Invalid(format!("node {id} is not a member")));
        }
        let voters: BTreeSet<NodeId> = m.membership().voter_ids().collect();
        if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(MembershipError::Invalid("cannot remove the last voter".into()));
            }
            self.raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
                .map_err(|e| MembershipError::Invalid(format!("removing voter {id}: {e}")))?;
        } else {
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await
                .map_err(|e| MembershipError::Invalid(format!("removing learner {id}: {e}")))?;
        }
        Ok(())
    }

    pub(super) fn require_leader(&self) -> Result<(), MembershipError> {
        let m = self.raft.metrics().borrow().clone();
        if m.state == ServerState::Leader {
            Ok(())
        } else {
            Err(match m.current_leader {
                Some(l) => MembershipError::NotLeader(format!("not the leader; send membership changes to node {l}")),
                None => MembershipError::TryAgain("no leader elected yet, retry shortly".to_string()),
            })
        }
    }
}
