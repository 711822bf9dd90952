//! Self-driven anti-entropy: the replicas of a shard compare the Merkle
//! leaves of their key buckets and repair a divergent bucket on their own.
//!
//! Raft makes every replica apply the same log, so two replicas that have
//! applied the same prefix must hold the same data; a difference is
//! corruption (a flipped bit on disk or in memory, a bug), which Raft never
//! notices because it never re-reads applied state. Comparing is only
//! meaningful at the *same applied index*: under load the leader is a few
//! entries ahead of its followers, and comparing its state with theirs would
//! report writes in flight as damage. So a comparison is a **round at an
//! index**:
//!
//! 1. Every few ticks the shard's leader takes the Merkle leaves of its
//!    store at its applied index `i` and sends them ([`Gossip::Digest`]) to
//!    the other members, with a round number (its tick count) so that a
//!    new round at the same index, in an idle cluster, takes fresh digests
//!    rather than reusing ones taken before some damage.
//! 2. A member that has applied exactly `i` answers with its own leaves at
//!    `i`, to every member; one still behind computes them when it applies
//!    entry `i` (entries are applied one at a time, so it stops at `i`); one
//!    already past `i` (it installed a snapshot over it) sits the round out.
//! 3. Each replica that holds leaves at `i` from a majority of the voters
//!    (itself included) looks, bucket by bucket, for a hash that a majority
//!    of the voters share. Where its own differs, it is the damaged one: it
//!    asks a member holding the majority's hash for the bucket
//!    ([`Gossip::BucketRequest`]).
//! 4. The answer ([`Gossip::Bucket`]) carries the contents *and the applied
//!    index `j` they are as of*. The requester replaces its bucket only when
//!    its own applied index is exactly `j`: at once if it is there, when its
//!    apply loop reaches `j` if it is behind, never if it is past `j`
//!    (dropped; the next round asks again).
//!
//! Why the repair is safe: a replica's bucket after applying entries
//! `1..=j` is a function of the log alone; the source applied exactly those
//! entries and the requester holds exactly those, so installing the
//! source's bucket at `j` installs the state the requester *should* have at
//! `j`. No applied write is rolled back (the requester's writes up to `j`
//! are all in the source's bucket, and it has applied none after `j`), and
//! none is applied early (the entries after `j` are applied later, in log
//! order, as usual). The dedup table (which requests were applied) is not
//! part of the buckets and is never touched, so exactly-once is unaffected.
//! A repair is only requested where a majority of the voters agree at `i`,
//! so a single damaged leader cannot spread its damage: it is the minority
//! and repairs itself from a follower. The source might itself be damaged
//! between `i` and `j`; then the next round, at a later index, sees both as
//! the minority and repairs both. Reads are served by the leader after
//! ReadIndex, so a damaged follower never answers a client meanwhile.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};
use quorate_transport::framing::ChannelId;

use super::Error;
use super::protocol::{
    BucketEntry, finish, get_entries, get_u8, get_u32, get_u64, need, put_entries,
};
use super::store::BUCKETS;

/// The channel replicas gossip Merkle digests and repairs on.
pub const ANTI_ENTROPY_CHANNEL: ChannelId = ChannelId((1 << 20) + 1);

/// Rounds (and their digests) a replica remembers.
const KEPT_ROUNDS: usize = 4;

/// One bucket's Merkle leaf hash.
pub type LeafHash = [u8; 32];

/// An anti-entropy round: the applied index every digest of it is taken
/// at, and the number the leader that started it gave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Round {
    /// The applied index.
    pub index: u64,
    /// The leader's number for it (distinguishes rounds at one index).
    pub seq: u64,
}

/// What replicas of a shard tell each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gossip {
    /// The sender's Merkle leaves (one per bucket) at applied `index`.
    Digest {
        /// The shard.
        shard: u32,
        /// The round: its index and the number the leader gave it.
        round: Round,
        /// One hash per bucket.
        leaves: Vec<LeafHash>,
    },
    /// Asks for the contents of a bucket.
    BucketRequest {
        /// The shard.
        shard: u32,
        /// The bucket.
        bucket: u64,
    },
    /// A bucket's contents as of the sender's applied `index`.
    Bucket {
        /// The shard.
        shard: u32,
        /// The bucket.
        bucket: u64,
        /// The applied index the contents are as of.
        index: u64,
        /// The keys of the bucket.
        entries: Vec<BucketEntry>,
    },
}

impl Gossip {
    /// The shard the message is about.
    pub fn shard(&self) -> u32 {
        match self {
            Gossip::Digest { shard, .. }
            | Gossip::BucketRequest { shard, .. }
            | Gossip::Bucket { shard, .. } => *shard,
        }
    }

    /// The frame payload.
    pub fn encode(&self) -> Bytes {
        let mut dst = BytesMut::new();
        match self {
            Gossip::Digest {
                shard,
                round,
                leaves,
            } => {
                dst.put_u8(1);
                dst.put_u32(*shard);
                dst.put_u64(round.index);
                dst.put_u64(round.seq);
                dst.put_u32(leaves.len() as u32);
                for leaf in leaves {
                    dst.put_slice(leaf);
                }
            }
            Gossip::BucketRequest { shard, bucket } => {
                dst.put_u8(2);
                dst.put_u32(*shard);
                dst.put_u64(*bucket);
            }
            Gossip::Bucket {
                shard,
                bucket,
                index,
                entries,
            } => {
                dst.put_u8(3);
                dst.put_u32(*shard);
                dst.put_u64(*bucket);
                dst.put_u64(*index);
                put_entries(&mut dst, entries);
            }
        }
        dst.freeze()
    }

    /// Parses a frame payload; malformed bytes are an error.
    pub fn decode(mut src: Bytes) -> Result<Self, Error> {
        let gossip = match get_u8(&mut src)? {
            1 => {
                let shard = get_u32(&mut src)?;
                let round = Round {
                    index: get_u64(&mut src)?,
                    seq: get_u64(&mut src)?,
                };
                let n = get_u32(&mut src)? as usize;
                if n as u64 != BUCKETS {
                    return Err(Error::Malformed("digest leaf count"));
                }
                need(&src, n.saturating_mul(32))?;
                let mut leaves = Vec::with_capacity(n);
                for _ in 0..n {
                    let raw = get_fixed(&mut src)?;
                    leaves.push(raw);
                }
                Gossip::Digest {
                    shard,
                    round,
                    leaves,
                }
            }
            2 => Gossip::BucketRequest {
                shard: get_u32(&mut src)?,
                bucket: get_u64(&mut src)?,
            },
            3 => Gossip::Bucket {
                shard: get_u32(&mut src)?,
                bucket: get_u64(&mut src)?,
                index: get_u64(&mut src)?,
                entries: get_entries(&mut src)?,
            },
            _ => return Err(Error::Malformed("unknown gossip kind")),
        };
        finish(&src, gossip)
    }
}

fn get_fixed(src: &mut Bytes) -> Result<LeafHash, Error> {
    need(src, 32)?;
    let raw = src.split_to(32);
    let mut out = [0u8; 32];
    out.copy_from_slice(&raw);
    Ok(out)
}

/// A bucket found damaged on this replica, and where to fetch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// The round that found it.
    pub round: Round,
    /// The damaged bucket.
    pub bucket: u64,
    /// A voter holding the majority's hash for it.
    pub source: u64,
}

/// One replica's side of the rounds: the digests it holds and the repairs
/// it is waiting for. Pure bookkeeping; the server does the I/O.
#[derive(Clone, Debug, Default)]
pub struct AntiEntropy {
    /// Per round, the leaves each member reported (self included).
    rounds: BTreeMap<Round, BTreeMap<u64, Vec<LeafHash>>>,
    /// Rounds announced at an index this replica has not applied yet.
    pending: BTreeSet<Round>,
    /// Buckets asked for, with the round that found them damaged and the
    /// voter asked: only its answer is taken.
    asked: BTreeMap<u64, (Round, u64)>,
    /// Repairs received ahead of this replica, by the index they are as of.
    parked: BTreeMap<u64, Vec<(u64, u64, Vec<BucketEntry>)>>,
}

impl AntiEntropy {
    /// A round was announced; `applied` is this replica's applied index.
    /// Returns whether to take (and send) its own digest now.
    pub fn announced(&mut self, round: Round, applied: u64, me: u64) -> bool {
        if self.has(round, me) {
            return false;
        }
        if applied == round.index {
            return true;
        }
        if applied < round.index {
            self.pending.insert(round);
            while self.pending.len() > KEPT_ROUNDS {
                self.pending.pop_first();
            }
        }
        false
    }

    /// The rounds waiting for this replica's digest at `applied`.
    pub fn wants_digest_at(&mut self, applied: u64) -> Vec<Round> {
        let first = Round {
            index: applied,
            seq: 0,
        };
        let after = Round {
            index: applied.saturating_add(1),
            seq: 0,
        };
        // Rounds passed over (a snapshot jumped past them) are given up.
        let mut now = self.pending.split_off(&first);
        self.pending = now.split_off(&after);
        now.into_iter().collect()
    }

    fn has(&self, round: Round, node: u64) -> bool {
        self.rounds
            .get(&round)
            .is_some_and(|r| r.contains_key(&node))
    }

    /// Records `node`'s leaves for `round` (its own included).
    pub fn record(&mut self, round: Round, node: u64, leaves: Vec<LeafHash>) {
        self.rounds.entry(round).or_default().insert(node, leaves);
        while self.rounds.len() > KEPT_ROUNDS {
            self.rounds.pop_first();
        }
        let oldest = self
            .rounds
            .keys()
            .next()
            .copied()
            .unwrap_or(Round { index: 0, seq: 0 });
        // A request whose round is forgotten may be asked again.
        self.asked.retain(|_, (round, _)| *round >= oldest);
    }

    /// The buckets of `round` where this replica (`me`) differs from
    /// a hash a majority of `voters` share, each with a voter to fetch it
    /// from (`prefer` first, the leader, when it holds that hash). Buckets
    /// already asked for are not returned again.
    pub fn divergent(
        &mut self,
        round: Round,
        me: u64,
        voters: &BTreeSet<u64>,
        prefer: Option<u64>,
    ) -> Vec<Divergence> {
        let Some(digests) = self.rounds.get(&round) else {
            return Vec::new();
        };
        let Some(mine) = digests.get(&me) else {
            return Vec::new();
        };
        let quorum = voters.len() / 2 + 1;
        let voting: Vec<(u64, &Vec<LeafHash>)> = digests
            .iter()
            .filter(|(n, _)| voters.contains(n))
            .map(|(&n, l)| (n, l))
            .collect();
        if voting.len() < quorum {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (bucket, own) in (0..).zip(mine) {
            if self.asked.contains_key(&bucket) {
                continue;
            }
            let mut counts: BTreeMap<&LeafHash, usize> = BTreeMap::new();
            for (_, leaves) in &voting {
                if let Some(h) = leaves.get(bucket as usize) {
                    *counts.entry(h).or_default() += 1;
                }
            }
            let Some((majority, _)) = counts.into_iter().find(|(_, c)| *c >= quorum) else {
                continue;
            };
            if majority == own {
                continue;
            }
            let holders = voting
                .iter()
                .filter(|(n, l)| *n != me && l.get(bucket as usize) == Some(majority))
                .map(|(n, _)| *n);
            let source = holders
                .clone()
                .find(|n| Some(*n) == prefer)
                .or_else(|| holders.clone().next());
            if let Some(source) = source {
                self.asked.insert(bucket, (round, source));
                out.push(Divergence {
                    round,
                    bucket,
                    source,
                });
            }
        }
        out
    }

    /// A repair arrived: `entries` are `bucket`'s contents as of `index`
    /// on `from`; `applied` is this replica's applied index. Returns the
    /// entries to install now (the replica is exactly at `index`); parks
    /// them if it is behind; drops them if it is past (never installed over
    /// writes applied after `index`). Contents nobody was asked for, or
    /// from another server than the one asked, are dropped: a repair
    /// overrides Raft, so only the majority's choice may make one.
    pub fn received(
        &mut self,
        from: u64,
        bucket: u64,
        index: u64,
        entries: Vec<BucketEntry>,
        applied: u64,
    ) -> Option<Vec<BucketEntry>> {
        if self.asked.get(&bucket).map(|&(_, source)| source) != Some(from) {
            return None;
        }
        let parked = self.parked.values().flatten().any(|(_, b, _)| *b == bucket);
        if parked {
            return None;
        }
        if applied == index {
            self.asked.remove(&bucket);
            return Some(entries);
        }
        if applied < index {
            self.parked
                .entry(index)
                .or_default()
                .push((from, bucket, entries));
        } else {
            self.asked.remove(&bucket);
        }
        None
    }

    /// Repairs parked for exactly `applied`, to install now (`from`,
    /// `bucket`, entries); those for indexes already passed are dropped.
    pub fn due(&mut self, applied: u64) -> Vec<(u64, u64, Vec<BucketEntry>)> {
        let later = self.parked.split_off(&applied.saturating_add(1));
        let now = std::mem::replace(&mut self.parked, later);
        let mut out = Vec::new();
        for (index, repairs) in now {
            for (from, bucket, entries) in repairs {
                self.asked.remove(&bucket);
                if index == applied {
                    out.push((from, bucket, entries));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(fill: u8) -> Vec<LeafHash> {
        vec![[fill; 32]; BUCKETS as usize]
    }

    fn at(index: u64) -> Round {
        Round { index, seq: 1 }
    }

    fn voters() -> BTreeSet<u64> {
        [1, 2, 3].into()
    }

    #[test]
    fn the_minority_repairs_itself_from_a_holder_of_the_majority_hash() {
        let mut ae = AntiEntropy::default();
        let mut damaged = leaves(0);
        damaged[5] = [9; 32];
        ae.record(at(10), 2, damaged);
        ae.record(at(10), 1, leaves(0));
        // Only two of three so far, and they disagree on bucket 5: no majority.
        let mut two = AntiEntropy::default();
        two.record(at(10), 2, {
            let mut l = leaves(0);
            l[5] = [9; 32];
            l
        });
        two.record(at(10), 3, leaves(1));
        assert!(two.divergent(at(10), 2, &voters(), None).is_empty());
        ae.record(at(10), 3, leaves(0));
        let found = ae.divergent(at(10), 2, &voters(), Some(3));
        assert_eq!(
            found,
            vec![Divergence {
                round: at(10),
                bucket: 5,
                source: 3
            }]
        );
        // Asked once per bucket until the repair lands or is dropped.
        assert!(ae.divergent(at(10), 2, &voters(), Some(3)).is_empty());
    }

    #[test]
    fn a_damaged_leader_is_the_minority_and_the_followers_keep_their_state() {
        let mut leader = AntiEntropy::default();
        let mut bad = leaves(0);
        bad[1] = [7; 32];
        for (n, l) in [(1, bad.clone()), (2, leaves(0)), (3, leaves(0))] {
            leader.record(at(4), n, l);
        }
        assert_eq!(leader.divergent(at(4), 1, &voters(), Some(1)).len(), 1);
        let mut follower = AntiEntropy::default();
        for (n, l) in [(1, bad), (2, leaves(0)), (3, leaves(0))] {
            follower.record(at(4), n, l);
        }
        assert!(follower.divergent(at(4), 2, &voters(), Some(1)).is_empty());
    }

    #[test]
    fn learners_do_not_vote_on_the_majority() {
        let mut ae = AntiEntropy::default();
        ae.record(at(3), 1, leaves(0));
        ae.record(at(3), 4, leaves(1));
        ae.record(at(3), 5, leaves(1));
        assert!(ae.divergent(at(3), 1, &voters(), None).is_empty());
    }

    #[test]
    fn a_repair_is_installed_only_at_its_own_index() {
        let entry = BucketEntry {
            key: "k".into(),
            value: Bytes::from_static(b"v"),
            stamp: 1,
            request: 2,
        };
        let mut ae = AntiEntropy::default();
        // This replica (2) differs in buckets 5 to 8 from voters 1 and 3.
        let mut mine = leaves(0);
        for leaf in &mut mine[5..=8] {
            *leaf = [1; 32];
        }
        ae.record(at(9), 2, mine);
        ae.record(at(9), 1, leaves(0));
        ae.record(at(9), 3, leaves(0));
        assert_eq!(ae.divergent(at(9), 2, &voters(), Some(3)).len(), 4);
        // Unasked contents, or from another server than the one asked, are
        // never taken.
        assert!(ae.received(3, 9, 20, vec![entry.clone()], 20).is_none());
        assert!(ae.received(1, 5, 20, vec![entry.clone()], 20).is_none());
        // Exactly there: now.
        assert!(ae.received(3, 5, 20, vec![entry.clone()], 20).is_some());
        // Behind: parked until the apply loop reaches 30, not before.
        assert!(ae.received(3, 6, 30, vec![entry.clone()], 25).is_none());
        assert!(ae.due(29).is_empty());
        assert_eq!(ae.due(30), vec![(3, 6, vec![entry.clone()])]);
        // Past it: dropped, never installed over later writes.
        assert!(ae.received(3, 7, 40, vec![entry.clone()], 41).is_none());
        assert!(ae.received(3, 8, 50, vec![entry], 45).is_none());
        assert!(ae.due(51).is_empty(), "jumped over 50: dropped");
    }

    #[test]
    fn rounds_wait_for_the_index_and_are_given_up_when_jumped_over() {
        let mut ae = AntiEntropy::default();
        assert!(ae.announced(at(10), 10, 2));
        assert!(!ae.announced(at(12), 10, 2));
        let again = Round { index: 12, seq: 2 };
        assert!(!ae.announced(again, 10, 2));
        assert!(!ae.announced(at(14), 10, 2));
        assert!(ae.wants_digest_at(11).is_empty());
        assert_eq!(ae.wants_digest_at(12), vec![at(12), again]);
        // A snapshot took the replica from 12 to 20: round 14 is gone.
        assert!(ae.wants_digest_at(20).is_empty());
        assert!(ae.wants_digest_at(14).is_empty());
        // Already past: sits the round out.
        assert!(!ae.announced(at(5), 20, 2));
        // Taken once per round; a new round at the same index takes it again.
        ae.record(at(20), 2, leaves(0));
        assert!(!ae.announced(at(20), 20, 2));
        assert!(ae.announced(Round { index: 20, seq: 9 }, 20, 2));
    }

    #[test]
    fn gossip_round_trips_and_refuses_truncation() {
        let all = [
            Gossip::Digest {
                shard: 1,
                round: Round { index: 9, seq: 4 },
                leaves: leaves(3),
            },
            Gossip::BucketRequest {
                shard: 0,
                bucket: 7,
            },
            Gossip::Bucket {
                shard: 0,
                bucket: 7,
                index: 12,
                entries: vec![BucketEntry {
                    key: "a".into(),
                    value: Bytes::from_static(b"b"),
                    stamp: 3,
                    request: 4,
                }],
            },
        ];
        for g in all {
            let bytes = g.encode();
            assert_eq!(Gossip::decode(bytes.clone()).unwrap(), g);
            for cut in 0..bytes.len() {
                assert!(Gossip::decode(bytes.slice(..cut)).is_err());
            }
        }
    }
}
