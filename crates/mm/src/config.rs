//! The cluster configuration: who votes, at which epoch (docs/paxos.md, "Membership changes").
//!
//! A configuration is stable (one set of members) or joint (the old set and the new one, while a
//! change runs: a quorum then needs a majority of each). Its epoch rises by one at every step,
//! and every Paxos frame carries its sender's epoch: an acceptor answers only frames of its own
//! epoch. Configurations are created only by a change's coordinator, after a compare-and-set
//! on [`CONFIG_KEY`] chose them, so two configurations with one epoch are equal, and a node may
//! adopt any configuration a member shows it with a higher epoch.
//!
//! An acceptor's identity in ballots and quorums is its member id with its *generation* in the
//! high 32 bits ([`voter_id`]). A member that is replaced (same id, empty data dir) gets a new
//! generation, so the new acceptor is never counted as the old one, and its ballots never
//! repeat one of its previous life. The generation of a member added or replaced at a change
//! is the epoch of that change's joint configuration: unique, and above any earlier generation.

use rampart_paxos::{NodeId, Voters};
use serde::{Deserialize, Serialize};

/// The register holding the current configuration (JSON), in the reserved namespace: written
/// only by membership changes, by compare-and-set from the configuration it replaces.
pub const CONFIG_KEY: &[u8] = b"\xff\xfemm/config";
/// Meta key of this node's adopted configuration (JSON), durable before it is used.
pub const CONFIG_META_KEY: &str = "mm_config";
/// Member ids must fit in 32 bits: the high bits of a voter id hold the generation.
pub const MEMBER_ID_MAX: u64 = u32::MAX as u64;
/// Every configuration epoch is below this: a member's generation is the epoch that added it.
pub const EPOCH_MAX: u64 = u32::MAX as u64;
/// Largest encoded configuration a node accepts from a peer or its disk.
pub const CONFIG_BYTES_MAX: usize = 64 * 1024;

/// One member: its id, generation and peer address, and the join nonce of the data dir it was
/// added with (0 for bootstrap members): a joining node becomes this member only if the nonce
/// is its own, so a node whose data was lost can never take over its old identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEntry {
    pub id: u64,
    pub generation: u32,
    pub peer_addr: String,
    pub nonce: u64,
}

impl MemberEntry {
    pub fn voter(&self) -> NodeId {
        voter_id(self.id, self.generation)
    }
}

/// A configuration (module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// Fixed for the cluster's life: the membership fingerprint of its bootstrap members.
    pub cluster_id: u64,
    pub epoch: u64,
    pub members: Vec<MemberEntry>,
    /// The new members while a change runs (joint configuration).
    pub next: Option<Vec<MemberEntry>>,
}

/// The acceptor (and ballot) identity of member `id` at `generation`.
pub fn voter_id(id: u64, generation: u32) -> NodeId {
    NodeId((u64::from(generation) << 32) | (id & MEMBER_ID_MAX))
}

/// The member id a voter id belongs to.
pub fn member_of(voter: NodeId) -> u64 {
    voter.0 & MEMBER_ID_MAX
}

fn check_set(set: &[MemberEntry], what: &str) -> Result<(), String> {
    if set.is_empty() || set.len() > rampart_paxos::ACCEPTORS_MAX {
        return Err(format!("{what}: {} members, expected 1 to {}", set.len(), rampart_paxos::ACCEPTORS_MAX));
    }
    for (i, m) in set.iter().enumerate() {
        if m.id == 0 || m.id > MEMBER_ID_MAX {
            return Err(format!("{what}: member id {} is not within 1..={MEMBER_ID_MAX}", m.id));
        }
        if m.peer_addr.is_empty()
            || m.peer_addr.len() > crate::validate::PEER_ADDR_BYTES_MAX
            || m.peer_addr.chars().any(char::is_control)
        {
            return Err(format!("{what}: member {} has an invalid peer address", m.id));
        }
        if set[..i].iter().any(|o| o.id == m.id) {
            return Err(format!("{what}: member {} is listed twice", m.id));
        }
    }
    Ok(())
}

impl ClusterConfig {
    /// The configuration of a cluster bootstrapped with `members` (id, peer address): epoch 0,
    /// every generation 0.
    pub fn bootstrap(members: impl IntoIterator<Item = (u64, String)>) -> Self {
        let members: Vec<MemberEntry> =
            members.into_iter().map(|(id, peer_addr)| MemberEntry { id, generation: 0, peer_addr, nonce: 0 }).collect();
        let cluster_id = crate::wire::membership_fingerprint(members.iter().map(|m| m.id));
        ClusterConfig { cluster_id, epoch: 0, members, next: None }
    }

    /// Well-formed: bounded sizes, ids within 32 bits, no member twice in a set.
    pub fn check(&self) -> Result<(), String> {
        // Generations are epochs, and fit in 32 bits; a higher epoch only a forged or corrupt
        // configuration can carry (and the next change's epoch must not overflow).
        if self.epoch >= EPOCH_MAX {
            return Err(format!("configuration epoch {} is not below {EPOCH_MAX}", self.epoch));
        }
        check_set(&self.members, "members")?;
        if let Some(next) = &self.next {
            check_set(next, "next members")?;
            // The two sets together are bounded too (a replace adds a voter to the union).
            let old: Vec<NodeId> = self.members.iter().map(MemberEntry::voter).collect();
            let new: Vec<NodeId> = next.iter().map(MemberEntry::voter).collect();
            Voters::joint(&old, &new).map_err(|e| format!("the joint configuration: {e}"))?;
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a configuration always serialises")
    }

    pub fn decode(raw: &[u8]) -> Result<Self, String> {
        if raw.len() > CONFIG_BYTES_MAX {
            return Err(format!("configuration of {} bytes, over {CONFIG_BYTES_MAX}", raw.len()));
        }
        let c: ClusterConfig = serde_json::from_slice(raw).map_err(|e| format!("malformed configuration: {e}"))?;
        c.check()?;
        Ok(c)
    }

    pub fn is_joint(&self) -> bool {
        self.next.is_some()
    }

    /// Who votes: a majority of `members`, and of `next` too while a change runs.
    pub fn voters(&self) -> Voters {
        let old: Vec<NodeId> = self.members.iter().map(MemberEntry::voter).collect();
        let v = match &self.next {
            None => Voters::single(&old),
            Some(next) => Voters::joint(&old, &next.iter().map(MemberEntry::voter).collect::<Vec<_>>()),
        };
        v.expect("a checked configuration has valid voter sets")
    }

    /// Every member of either set; for an id in both, the entry of the newest generation.
    pub fn everyone(&self) -> Vec<MemberEntry> {
        let mut all: Vec<MemberEntry> = Vec::new();
        for m in self.members.iter().chain(self.next.iter().flatten()) {
            match all.iter_mut().find(|o| o.id == m.id) {
                Some(o) if o.generation < m.generation => *o = m.clone(),
                Some(_) => {}
                None => all.push(m.clone()),
            }
        }
        all.sort_by_key(|m| m.id);
        all
    }

    /// The entry of member `id`, newest generation first (see [`ClusterConfig::everyone`]).
    pub fn entry(&self, id: u64) -> Option<MemberEntry> {
        self.everyone().into_iter().find(|m| m.id == id)
    }

    /// The members once this configuration's change is done.
    pub fn target(&self) -> &[MemberEntry] {
        self.next.as_deref().unwrap_or(&self.members)
    }

    /// True when the voter `voter` (a member at a generation) votes in this configuration.
    pub fn votes(&self, voter: NodeId) -> bool {
        self.members.iter().chain(self.next.iter().flatten()).any(|m| m.voter() == voter)
    }
}

/// What node `me` is under `config`. `mine` is the generation it is a member at (`None`: a
/// joining node), `nonce` its data dir's join nonce.
pub fn role_in(config: &ClusterConfig, me: u64, mine: Option<u32>, nonce: u64) -> crate::Role {
    use crate::Role;
    let Some(entry) = config.entry(me) else {
        return match mine {
            None => {
                Role::Joining { reason: format!("node {me} is not a member yet: add it with `rampart cluster add`") }
            }
            Some(_) => Role::Removed {
                reason: format!(
                    "node {me} was removed from the cluster (configuration epoch {}); to bring it back, wipe its \
                     data dir and add it again",
                    config.epoch
                ),
            },
        };
    };
    match mine {
        Some(g) if g == entry.generation => Role::Member { generation: g },
        None if nonce != 0 && entry.nonce == nonce => Role::Member { generation: entry.generation },
        None => Role::Joining {
            reason: format!(
                "node {me} has no data for its membership (generation {}): its data dir was lost or is new; run \
                 `rampart cluster replace {me}` on a member to bring it back with this data dir",
                entry.generation
            ),
        },
        Some(g) => Role::Removed {
            reason: format!(
                "node {me} (generation {g}) was replaced by a newer instance (generation {}); wipe this data dir to \
                 use it again",
                entry.generation
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64, generation: u32) -> MemberEntry {
        MemberEntry { id, generation, peer_addr: format!("127.0.0.1:{}", 7000 + id), nonce: 0 }
    }

    #[test]
    fn voter_ids_keep_member_and_generation_apart() {
        assert_eq!(voter_id(3, 0), NodeId(3));
        assert_eq!(voter_id(3, 5), NodeId((5 << 32) | 3));
        assert_eq!(member_of(voter_id(3, 5)), 3);
        assert_ne!(voter_id(3, 5), voter_id(3, 6));
    }

    #[test]
    fn a_configuration_round_trips_and_bad_ones_are_refused() {
        let c = ClusterConfig::bootstrap((1..=3).map(|i| (i, format!("127.0.0.1:{}", 7000 + i))));
        assert_eq!(c.epoch, 0);
        assert_eq!(ClusterConfig::decode(&c.encode()), Ok(c.clone()));
        let mut twice = c.clone();
        twice.members.push(entry(2, 4));
        assert!(ClusterConfig::decode(&twice.encode()).unwrap_err().contains("member 2 is listed twice"));
        let mut big_id = c.clone();
        big_id.members[0].id = MEMBER_ID_MAX + 1;
        assert!(ClusterConfig::decode(&big_id.encode()).is_err());
        let mut empty = c.clone();
        empty.next = Some(vec![]);
        assert!(ClusterConfig::decode(&empty.encode()).is_err());
        assert!(ClusterConfig::decode(b"{").unwrap_err().starts_with("malformed configuration"));
        let mut forged = c.clone();
        forged.epoch = u64::MAX;
        assert!(ClusterConfig::decode(&forged.encode()).unwrap_err().contains("epoch"), "no epoch overflow later");
        // 64 members and a replacement: 65 voters in the joint configuration, refused.
        let full: Vec<MemberEntry> = (1..=64).map(|i| entry(i, 0)).collect();
        let mut replaced = full.clone();
        replaced[0] = entry(1, 9);
        let joint = ClusterConfig { cluster_id: 1, epoch: 9, members: full, next: Some(replaced) };
        assert!(joint.check().unwrap_err().contains("joint configuration"), "a union over the bound is refused");
        assert!(ClusterConfig::decode(&vec![b' '; CONFIG_BYTES_MAX + 1]).is_err());
    }

    #[test]
    fn a_replacement_is_a_new_voter_under_the_same_id() {
        let old = vec![entry(1, 0), entry(2, 0), entry(3, 0)];
        let new = vec![entry(1, 0), entry(2, 0), entry(3, 7)];
        let joint = ClusterConfig { cluster_id: 9, epoch: 7, members: old, next: Some(new) };
        let v = joint.voters();
        assert_eq!(v.all().len(), 4, "3 at generation 0 and 3 at generation 7 are two voters");
        assert!(!v.is_quorum(&[NodeId(1), voter_id(3, 7)]), "the old set needs 1 and 2");
        assert!(v.is_quorum(&[NodeId(1), NodeId(2)]));
        assert_eq!(joint.entry(3), Some(entry(3, 7)));
        assert_eq!(joint.everyone().len(), 3);
        assert!(joint.votes(NodeId(3)) && joint.votes(voter_id(3, 7)));
    }
}
