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
//! index**, and only the shard's leader runs rounds:
//!
//! 1. Every few ticks the leader takes the Merkle leaves of its store at its
//!    applied index `i` and sends them ([`Gossip::Digest`]) to the other
//!    members. A [`Round`] is named by the leader's Raft term and a number
//!    it counts up within the term, so rounds are totally ordered across
//!    leaders and restarts.
//! 2. A member takes part only in rounds of its current leader in its
//!    current term, and only in a round newer than every round it took part
//!    in before; everything else is dropped. One that has applied exactly
//!    `i` answers the leader alone ([`Gossip::DigestReply`]) with its leaves
//!    at `i`; one still behind answers when its apply loop reaches `i`
//!    (entries are applied one at a time, so it stops at `i`); one already
//!    past `i` (a snapshot took it over) sits the round out.
//! 3. The leader, once it holds leaves at `i` from a majority of the voters
//!    (itself included), looks, bucket by bucket, for a hash that a
//!    majority of the voters share. A member whose hash differs is damaged
//!    there: the leader tells it once per round and bucket
//!    ([`Gossip::Verdict`], naming a voter that holds the majority's hash),
//!    or, if the damaged one is the leader itself, asks such a voter.
//! 4. The damaged member asks that voter for the bucket
//!    ([`Gossip::BucketRequest`]); the answer ([`Gossip::Bucket`]) carries
//!    the contents *and the applied index `j` they are as of*. The requester
//!    replaces its bucket only when its own applied index is exactly `j`: at
//!    once if it is there, when its apply loop reaches `j` if it is behind,
//!    never if it is past `j` (dropped; a later round asks again).
//!
//! **Bounded traffic, by construction.** No message is relayed or answered
//! twice, and every answer goes to the party the protocol names: a digest
//! gets one reply, to the round's leader, once per round (and rounds only
//! move forward); a reply gets at most one verdict per member and bucket,
//! for a round the leader itself started; a verdict gets one bucket request
//! per bucket not already asked for; a bucket request gets one bucket, at
//! most [`BUCKETS_SERVED_PER_WINDOW`] per requester per window. Nothing is ever
//! relayed, so no message can echo or multiply; the only source of new
//! traffic is the leader's own round timer. (An earlier design broadcast
//! every reply to every member and answered any round not in a small cache:
//! a restarted node replayed a backlog of old rounds, each evicted at once
//! and answered again by everyone, and the echo starved Raft of its link.)
//!
//! Why the repair is safe: a replica's bucket after applying entries
//! `1..=j` is a function of the log alone; the source applied exactly those
//! entries and the requester holds exactly those, so installing the
//! source's bucket at `j` installs the state the requester *should* have at
//! `j`. No applied write is rolled back (the requester's writes up to `j`
//! are all in the source's bucket, and it has applied none after `j`), and
//! none is applied early (the entries after `j` are applied later, in log
//! order, as usual). The session table (which requests were applied) is not
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

/// Rounds a leader remembers the replies of.
const KEPT_ROUNDS: usize = 2;

/// Ticks in one window of the bucket-serving budget.
pub const SERVE_WINDOW_TICKS: u64 = 10;

/// Buckets one replica sends one requester per window of
/// [`SERVE_WINDOW_TICKS`]; requests beyond it are dropped (a later round
/// asks again).
pub const BUCKETS_SERVED_PER_WINDOW: u32 = 8;

/// One bucket's Merkle leaf hash.
pub type LeafHash = [u8; 32];

/// An anti-entropy round: who started it (the leader's Raft term and its
/// count of rounds within that term, which order rounds) and the applied
/// index every digest of it is taken at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Round {
    /// The Raft term of the leader that started it.
    pub term: u64,
    /// The leader's count of rounds in that term (from 1).
    pub seq: u64,
    /// The applied index.
    pub index: u64,
}

/// What replicas of a shard tell each other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gossip {
    /// The leader's Merkle leaves (one per bucket) at the round's index.
    Digest {
        /// The shard.
        shard: u32,
        /// The round.
        round: Round,
        /// One hash per bucket.
        leaves: Vec<LeafHash>,
    },
    /// A member's leaves at the round's index, to the round's leader only.
    DigestReply {
        /// The shard.
        shard: u32,
        /// The round.
        round: Round,
        /// One hash per bucket.
        leaves: Vec<LeafHash>,
    },
    /// The leader tells a member which of its buckets differ from the
    /// majority's in a round, and whom to fetch each from.
    Verdict {
        /// The shard.
        shard: u32,
        /// The round.
        round: Round,
        /// `(bucket, source)`: the damaged bucket and a voter holding the
        /// majority's hash for it.
        buckets: Vec<(u64, u64)>,
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
            | Gossip::DigestReply { shard, .. }
            | Gossip::Verdict { shard, .. }
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
            }
            | Gossip::DigestReply {
                shard,
                round,
                leaves,
            } => {
                dst.put_u8(if matches!(self, Gossip::Digest { .. }) {
                    1
                } else {
                    4
                });
                dst.put_u32(*shard);
                put_round(&mut dst, round);
                dst.put_u32(leaves.len() as u32);
                for leaf in leaves {
                    dst.put_slice(leaf);
                }
            }
            Gossip::Verdict {
                shard,
                round,
                buckets,
            } => {
                dst.put_u8(5);
                dst.put_u32(*shard);
                put_round(&mut dst, round);
                dst.put_u32(buckets.len() as u32);
                for (bucket, source) in buckets {
                    dst.put_u64(*bucket);
                    dst.put_u64(*source);
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
            kind @ (1 | 4) => {
                let shard = get_u32(&mut src)?;
                let round = get_round(&mut src)?;
                let leaves = get_leaves(&mut src)?;
                if kind == 1 {
                    Gossip::Digest {
                        shard,
                        round,
                        leaves,
                    }
                } else {
                    Gossip::DigestReply {
                        shard,
                        round,
                        leaves,
                    }
                }
            }
            5 => {
                let shard = get_u32(&mut src)?;
                let round = get_round(&mut src)?;
                let n = get_u32(&mut src)? as usize;
                if n as u64 > BUCKETS {
                    return Err(Error::Malformed("verdict bucket count"));
                }
                need(&src, n.saturating_mul(16))?;
                let mut buckets = Vec::with_capacity(n);
                for _ in 0..n {
                    buckets.push((get_u64(&mut src)?, get_u64(&mut src)?));
                }
                Gossip::Verdict {
                    shard,
                    round,
                    buckets,
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

fn put_round(dst: &mut BytesMut, round: &Round) {
    dst.put_u64(round.term);
    dst.put_u64(round.seq);
    dst.put_u64(round.index);
}

fn get_round(src: &mut Bytes) -> Result<Round, Error> {
    Ok(Round {
        term: get_u64(src)?,
        seq: get_u64(src)?,
        index: get_u64(src)?,
    })
}

fn get_leaves(src: &mut Bytes) -> Result<Vec<LeafHash>, Error> {
    let n = get_u32(src)? as usize;
    if n as u64 != BUCKETS {
        return Err(Error::Malformed("digest leaf count"));
    }
    need(src, n.saturating_mul(32))?;
    let mut leaves = Vec::with_capacity(n);
    for _ in 0..n {
        leaves.push(get_fixed(src)?);
    }
    Ok(leaves)
}

fn get_fixed(src: &mut Bytes) -> Result<LeafHash, Error> {
    need(src, 32)?;
    let raw = src.split_to(32);
    let mut out = [0u8; 32];
    out.copy_from_slice(&raw);
    Ok(out)
}

/// What the replica's server must know of its Raft node and store when a
/// message arrives: read-only facts, so the bookkeeping stays pure.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    /// The replica's current Raft term.
    pub term: u64,
    /// The leader it knows of in that term.
    pub leader: Option<u64>,
    /// Its applied index.
    pub applied: u64,
    /// The shard's voters (the majority is counted over them).
    pub voters: &'a BTreeSet<u64>,
    /// Every other member, voter or learner.
    pub others: &'a [u64],
}

/// What a message asks of the server besides the messages queued in
/// [`AntiEntropy::poll_transmit`].
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// Take this replica's leaves now (the store is at `round.index`) and
    /// pass them to [`AntiEntropy::digest_taken`].
    TakeDigest(Round),
    /// Send `bucket`'s contents at the applied index to `to`.
    ServeBucket {
        /// The requester.
        to: u64,
        /// The bucket.
        bucket: u64,
    },
    /// Install these entries as `bucket` now (the store is at their index).
    Install {
        /// Where they came from.
        source: u64,
        /// The bucket.
        bucket: u64,
        /// Their contents.
        entries: Vec<BucketEntry>,
    },
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

/// A round this replica leads: every member's leaves so far, and the
/// verdicts already given.
#[derive(Clone, Debug, Default)]
struct Led {
    digests: BTreeMap<u64, Vec<LeafHash>>,
    judged: BTreeSet<(u64, u64)>,
}

/// One replica's side of the rounds: the rounds it leads, the round it
/// takes part in, the repairs it waits for, and the messages to send. Pure
/// bookkeeping (no I/O, no clock): the server feeds it and drains
/// [`poll_transmit`](Self::poll_transmit).
#[derive(Clone, Debug)]
pub struct AntiEntropy {
    shard: u32,
    me: u64,
    /// Rounds started here as leader, newest last.
    led: BTreeMap<Round, Led>,
    /// The term of `seq`, and rounds started in it.
    seq: (u64, u64),
    /// The newest round taken part in as a member, and its leader.
    joined: Option<(Round, u64)>,
    /// Whether this replica still owes `joined` its reply (it is behind).
    owes: bool,
    /// Buckets asked for, with the round that found them damaged and the
    /// voter asked: only its answer is taken.
    asked: BTreeMap<u64, (Round, u64)>,
    /// Repairs received ahead of this replica, by the index they are as of.
    parked: BTreeMap<u64, Vec<(u64, u64, Vec<BucketEntry>)>>,
    /// Buckets served per requester in the current window.
    served: BTreeMap<u64, u32>,
    ticks: u64,
    outbox: Vec<(u64, Gossip)>,
}

impl AntiEntropy {
    /// Bookkeeping for replica `me` of `shard`.
    pub fn new(shard: u32, me: u64) -> Self {
        AntiEntropy {
            shard,
            me,
            led: BTreeMap::new(),
            seq: (0, 0),
            joined: None,
            owes: false,
            asked: BTreeMap::new(),
            parked: BTreeMap::new(),
            served: BTreeMap::new(),
            ticks: 0,
            outbox: Vec::new(),
        }
    }

    /// The next message to send, `(to, gossip)`.
    pub fn poll_transmit(&mut self) -> Option<(u64, Gossip)> {
        if self.outbox.is_empty() {
            return None;
        }
        Some(self.outbox.remove(0))
    }

    /// Every queued message, in order.
    pub fn drain_transmits(&mut self) -> std::vec::Drain<'_, (u64, Gossip)> {
        self.outbox.drain(..)
    }

    /// One tick passed: renews the bucket-serving budget every window.
    pub fn tick(&mut self) {
        self.tick_to(self.ticks + 1);
    }

    /// Brings this replica's clock to `ticks` at once (the node's tick
    /// count: a node with many shards only touches the replicas that have
    /// something to do, not every one on every tick). A serve window
    /// crossed on the way starts afresh, as [`tick`](Self::tick) by tick.
    pub fn tick_to(&mut self, ticks: u64) {
        if ticks <= self.ticks {
            return;
        }
        if ticks / SERVE_WINDOW_TICKS != self.ticks / SERVE_WINDOW_TICKS {
            self.served.clear();
        }
        self.ticks = ticks;
    }

    /// As leader in `term`, starts a round at `applied` with this
    /// replica's `leaves` there, and sends them to `others`.
    pub fn start_round(
        &mut self,
        term: u64,
        applied: u64,
        leaves: Vec<LeafHash>,
        others: &[u64],
    ) -> Round {
        if self.seq.0 != term {
            self.seq = (term, 0);
        }
        self.seq.1 += 1;
        let round = Round {
            term,
            seq: self.seq.1,
            index: applied,
        };
        for &to in others {
            let digest = Gossip::Digest {
                shard: self.shard,
                round,
                leaves: leaves.clone(),
            };
            self.outbox.push((to, digest));
        }
        let mut led = Led::default();
        led.digests.insert(self.me, leaves);
        self.led.insert(round, led);
        while self.led.len() > KEPT_ROUNDS {
            self.led.pop_first();
        }
        self.forget_old_asks(round);
        round
    }

    /// `from` sent `gossip`; `view` is this replica's state now.
    pub fn handle(&mut self, from: u64, gossip: Gossip, view: View<'_>) -> Action {
        match gossip {
            Gossip::Digest { round, .. } => self.on_digest(from, round, view),
            Gossip::DigestReply { round, leaves, .. } => {
                self.on_reply(from, round, leaves, view);
                Action::None
            }
            Gossip::Verdict { round, buckets, .. } => {
                self.on_verdict(from, round, &buckets);
                Action::None
            }
            Gossip::BucketRequest { bucket, .. } => {
                let served = self.served.entry(from).or_default();
                if bucket >= BUCKETS || *served >= BUCKETS_SERVED_PER_WINDOW {
                    return Action::None;
                }
                *served += 1;
                Action::ServeBucket { to: from, bucket }
            }
            Gossip::Bucket {
                bucket,
                index,
                entries,
                ..
            } => match self.received(from, bucket, index, entries, view.applied) {
                Some(entries) => Action::Install {
                    source: from,
                    bucket,
                    entries,
                },
                None => Action::None,
            },
        }
    }

    /// A round announced by `from`: taken part in only if `from` leads
    /// this replica's current term and the round is newer than any before.
    fn on_digest(&mut self, from: u64, round: Round, view: View<'_>) -> Action {
        let newer = self.joined.is_none_or(|(last, _)| round > last);
        if round.term != view.term || view.leader != Some(from) || from == self.me || !newer {
            return Action::None;
        }
        self.joined = Some((round, from));
        self.owes = false;
        self.forget_old_asks(round);
        if view.applied == round.index {
            return Action::TakeDigest(round);
        }
        // Behind: answer when the apply loop gets there. Past: sit it out.
        self.owes = view.applied < round.index;
        Action::None
    }

    /// The store reached applied index `applied`: whether the round this
    /// replica takes part in waits for its leaves now.
    pub fn wants_digest_at(&mut self, applied: u64) -> Option<Round> {
        let (round, _) = self.joined?;
        if !self.owes || applied < round.index {
            return None;
        }
        self.owes = false;
        (applied == round.index).then_some(round)
    }

    /// This replica's `leaves` for `round`, taken at its index: as a
    /// member, the reply to the round's leader.
    pub fn digest_taken(&mut self, round: Round, leaves: Vec<LeafHash>) {
        if let Some((joined, leader)) = self.joined
            && joined == round
        {
            let reply = Gossip::DigestReply {
                shard: self.shard,
                round,
                leaves,
            };
            self.outbox.push((leader, reply));
        }
    }

    /// A member's reply to a round this replica leads.
    fn on_reply(&mut self, from: u64, round: Round, leaves: Vec<LeafHash>, view: View<'_>) {
        let member = view.others.contains(&from);
        let Some(led) = self.led.get_mut(&round) else {
            return;
        };
        if !member || led.digests.contains_key(&from) {
            return;
        }
        led.digests.insert(from, leaves);
        self.judge(round, view.voters);
    }

    /// Tells every member of `round` whose bucket differs from a hash a
    /// majority of `voters` share, once per member and bucket; asks for
    /// this replica's own damaged buckets.
    fn judge(&mut self, round: Round, voters: &BTreeSet<u64>) {
        let me = self.me;
        let Some(led) = self.led.get_mut(&round) else {
            return;
        };
        let quorum = voters.len() / 2 + 1;
        let voting: Vec<(u64, &Vec<LeafHash>)> = led
            .digests
            .iter()
            .filter(|(n, _)| voters.contains(n))
            .map(|(&n, l)| (n, l))
            .collect();
        if voting.len() < quorum {
            return;
        }
        let mut verdicts: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
        for bucket in 0..BUCKETS {
            let Some(majority) = majority_hash(&voting, bucket, quorum) else {
                continue;
            };
            let holders: Vec<u64> = voting
                .iter()
                .filter(|(_, l)| l.get(bucket as usize) == Some(&majority))
                .map(|(n, _)| *n)
                .collect();
            for (&member, leaves) in &led.digests {
                if leaves.get(bucket as usize) == Some(&majority)
                    || !led.judged.insert((member, bucket))
                {
                    continue;
                }
                // The leader's copy first: it answers the fastest.
                let source = holders
                    .iter()
                    .copied()
                    .filter(|&h| h != member)
                    .min_by_key(|&h| h != me);
                if let Some(source) = source {
                    verdicts.entry(member).or_default().push((source, bucket));
                }
            }
        }
        for (member, found) in verdicts {
            if member == me {
                for (source, bucket) in found {
                    self.ask(round, bucket, source);
                }
            } else {
                let buckets = found.into_iter().map(|(s, b)| (b, s)).collect();
                let verdict = Gossip::Verdict {
                    shard: self.shard,
                    round,
                    buckets,
                };
                self.outbox.push((member, verdict));
            }
        }
    }

    /// The leader's verdict on this replica's leaves in `round`.
    fn on_verdict(&mut self, from: u64, round: Round, buckets: &[(u64, u64)]) {
        if self.joined != Some((round, from)) {
            return;
        }
        for &(bucket, source) in buckets {
            if bucket < BUCKETS && source != self.me {
                self.ask(round, bucket, source);
            }
        }
    }

    fn ask(&mut self, round: Round, bucket: u64, source: u64) {
        if self.asked.contains_key(&bucket) {
            return;
        }
        self.asked.insert(bucket, (round, source));
        let request = Gossip::BucketRequest {
            shard: self.shard,
            bucket,
        };
        self.outbox.push((source, request));
    }

    /// Buckets asked for in rounds before the one before `round` may be
    /// asked again.
    fn forget_old_asks(&mut self, round: Round) {
        let keep_from = Round {
            seq: round.seq.saturating_sub(1),
            ..round
        };
        self.asked
            .retain(|_, (r, _)| (r.term, r.seq) >= (keep_from.term, keep_from.seq));
    }

    /// The buckets this replica asked for and has not received, with the
    /// round that found each and the voter asked.
    pub fn asked(&self) -> Vec<Divergence> {
        self.asked
            .iter()
            .map(|(&bucket, &(round, source))| Divergence {
                round,
                bucket,
                source,
            })
            .collect()
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

/// The hash of `bucket` that at least `quorum` of `voting` share.
fn majority_hash(voting: &[(u64, &Vec<LeafHash>)], bucket: u64, quorum: usize) -> Option<LeafHash> {
    let mut counts: BTreeMap<&LeafHash, usize> = BTreeMap::new();
    for (_, leaves) in voting {
        if let Some(h) = leaves.get(bucket as usize) {
            *counts.entry(h).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .find(|(_, c)| *c >= quorum)
        .map(|(h, _)| *h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(fill: u8) -> Vec<LeafHash> {
        vec![[fill; 32]; BUCKETS as usize]
    }

    fn damaged(buckets: &[usize]) -> Vec<LeafHash> {
        let mut l = leaves(0);
        for &b in buckets {
            l[b] = [9; 32];
        }
        l
    }

    fn voters() -> BTreeSet<u64> {
        [1, 2, 3].into()
    }

    fn view<'a>(
        _me: u64,
        term: u64,
        applied: u64,
        voters: &'a BTreeSet<u64>,
        others: &'a [u64],
    ) -> View<'a> {
        View {
            term,
            leader: Some(1),
            applied,
            voters,
            others,
        }
    }

    fn sent(ae: &mut AntiEntropy) -> Vec<(u64, Gossip)> {
        ae.drain_transmits().collect()
    }

    /// Runs one round of a 3-member shard led by 1, with each member's
    /// leaves, every message delivered at once; returns the engines.
    fn round(all: [Vec<LeafHash>; 3]) -> [AntiEntropy; 3] {
        let vs = voters();
        let others = [[2, 3], [1, 3], [1, 2]];
        let mut ae = [1, 2, 3].map(|me| AntiEntropy::new(0, me));
        ae[0].start_round(5, 10, all[0].clone(), &others[0]);
        let mut queue: Vec<(u64, u64, Gossip)> = sent(&mut ae[0])
            .into_iter()
            .map(|(to, g)| (1, to, g))
            .collect();
        while let Some((from, to, g)) = (!queue.is_empty()).then(|| queue.remove(0)) {
            let i = (to - 1) as usize;
            let action = ae[i].handle(from, g, view(to, 5, 10, &vs, &others[i]));
            if let Action::TakeDigest(r) = action {
                ae[i].digest_taken(r, all[i].clone());
            }
            queue.extend(sent(&mut ae[i]).into_iter().map(|(t, g)| (to, t, g)));
        }
        ae
    }

    #[test]
    fn a_damaged_follower_is_told_and_asks_a_holder_of_the_majority_hash() {
        let [leader, two, three] = round([leaves(0), damaged(&[5]), leaves(0)]);
        assert!(leader.asked().is_empty());
        assert!(three.asked().is_empty());
        let asked = two.asked();
        assert_eq!(asked.len(), 1, "{asked:?}");
        assert_eq!(
            (asked[0].bucket, asked[0].source),
            (5, 1),
            "the leader first"
        );
    }

    #[test]
    fn a_damaged_leader_is_the_minority_and_asks_a_follower() {
        let [leader, two, three] = round([damaged(&[1, 2]), leaves(0), leaves(0)]);
        let asked: Vec<(u64, u64)> = leader
            .asked()
            .iter()
            .map(|d| (d.bucket, d.source))
            .collect();
        assert_eq!(asked.len(), 2);
        assert!(asked.iter().all(|&(b, s)| (b == 1 || b == 2) && s != 1));
        assert!(two.asked().is_empty() && three.asked().is_empty());
    }

    #[test]
    fn without_a_majority_hash_nobody_is_repaired() {
        let mut a = leaves(0);
        a[4] = [1; 32];
        let mut b = leaves(0);
        b[4] = [2; 32];
        let mut c = leaves(0);
        c[4] = [3; 32];
        let ae = round([a, b, c]);
        assert!(ae.iter().all(|e| e.asked().is_empty()));
    }

    #[test]
    fn learners_do_not_vote_on_the_majority() {
        // Voters 1 and 2 disagree on every bucket; learners 4 and 5 side
        // with 2, but only voters count.
        let vs: BTreeSet<u64> = [1, 2].into();
        let others = [2, 4, 5];
        let mut leader = AntiEntropy::new(0, 1);
        let r = leader.start_round(1, 3, leaves(0), &others);
        sent(&mut leader);
        for (n, l) in [(2, leaves(1)), (4, leaves(1)), (5, leaves(1))] {
            let reply = Gossip::DigestReply {
                shard: 0,
                round: r,
                leaves: l,
            };
            leader.handle(n, reply, view(1, 1, 3, &vs, &others));
        }
        assert!(sent(&mut leader).is_empty());
        assert!(leader.asked().is_empty());
    }

    #[test]
    fn a_member_joins_only_its_leaders_newer_rounds_and_answers_once() {
        let vs = voters();
        let others = [1, 3];
        let mut ae = AntiEntropy::new(0, 2);
        let at = |term, seq, index| Round { term, seq, index };
        let digest = |round| Gossip::Digest {
            shard: 0,
            round,
            leaves: leaves(0),
        };
        let v = |applied| view(2, 5, applied, &vs, &others);
        // Not the leader, another term: dropped.
        assert_eq!(ae.handle(3, digest(at(5, 1, 10)), v(10)), Action::None);
        assert_eq!(ae.handle(1, digest(at(4, 9, 10)), v(10)), Action::None);
        assert_eq!(ae.handle(1, digest(at(6, 1, 10)), v(10)), Action::None);
        // The leader's round at our index: answered, to the leader alone.
        let r = at(5, 2, 10);
        assert_eq!(ae.handle(1, digest(r), v(10)), Action::TakeDigest(r));
        ae.digest_taken(r, leaves(0));
        let out = sent(&mut ae);
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0], (1, Gossip::DigestReply { round, .. }) if round == r));
        // The same round again, or any older one (a backlog replayed after
        // a restart or a pause): nothing.
        for old in [r, at(5, 1, 10), at(5, 1, 3), at(5, 2, 9)] {
            assert_eq!(ae.handle(1, digest(old), v(10)), Action::None);
        }
        // Behind: answered when the apply loop reaches the index.
        let later = at(5, 3, 12);
        assert_eq!(ae.handle(1, digest(later), v(10)), Action::None);
        assert_eq!(ae.wants_digest_at(11), None);
        assert_eq!(ae.wants_digest_at(12), Some(later));
        assert_eq!(ae.wants_digest_at(12), None, "once");
        // Jumped over by a snapshot: given up.
        let skipped = at(5, 4, 14);
        ae.handle(1, digest(skipped), v(12));
        assert_eq!(ae.wants_digest_at(20), None);
        // Past the index: sits the round out.
        assert_eq!(ae.handle(1, digest(at(5, 5, 15)), v(20)), Action::None);
        assert_eq!(ae.wants_digest_at(21), None);
        assert!(sent(&mut ae).is_empty());
    }

    #[test]
    fn replies_and_verdicts_count_only_for_the_rounds_they_belong_to() {
        let vs = voters();
        let others = [2, 3];
        let mut leader = AntiEntropy::new(0, 1);
        let r = leader.start_round(2, 7, leaves(0), &others);
        sent(&mut leader);
        let reply = |round, l| Gossip::DigestReply {
            shard: 0,
            round,
            leaves: l,
        };
        // A reply to a round never started here, or from a non-member.
        let forged = Round { seq: 99, ..r };
        leader.handle(2, reply(forged, damaged(&[3])), view(1, 2, 7, &vs, &others));
        leader.handle(9, reply(r, damaged(&[3])), view(1, 2, 7, &vs, &others));
        assert!(sent(&mut leader).is_empty());
        // Two agreeing members and a damaged one: one verdict, once.
        leader.handle(3, reply(r, leaves(0)), view(1, 2, 7, &vs, &others));
        assert!(sent(&mut leader).is_empty(), "all agree so far");
        leader.handle(2, reply(r, damaged(&[3])), view(1, 2, 7, &vs, &others));
        let verdicts = sent(&mut leader);
        assert_eq!(verdicts.len(), 1, "{verdicts:?}");
        assert!(
            matches!(&verdicts[0], (2, Gossip::Verdict { buckets, .. }) if buckets == &vec![(3, 1)])
        );
        leader.handle(2, reply(r, damaged(&[3])), view(1, 2, 7, &vs, &others));
        leader.handle(3, reply(r, leaves(0)), view(1, 2, 7, &vs, &others));
        assert!(
            sent(&mut leader).is_empty(),
            "judged once per member and bucket"
        );
        // A member takes a verdict only from the leader of its round.
        let mut member = AntiEntropy::new(0, 2);
        let digest = Gossip::Digest {
            shard: 0,
            round: r,
            leaves: leaves(0),
        };
        let v = view(2, 2, 7, &vs, &[1, 3]);
        member.handle(1, digest, v);
        member.digest_taken(r, damaged(&[3]));
        sent(&mut member);
        let verdict = |round| Gossip::Verdict {
            shard: 0,
            round,
            buckets: vec![(3, 1), (4, 3)],
        };
        member.handle(3, verdict(r), v);
        member.handle(1, verdict(forged), v);
        assert!(sent(&mut member).is_empty());
        member.handle(1, verdict(r), v);
        assert_eq!(sent(&mut member).len(), 2);
        member.handle(1, verdict(r), v);
        assert!(sent(&mut member).is_empty(), "asked once per bucket");
    }

    #[test]
    fn bucket_requests_are_served_within_a_budget_per_requester() {
        let vs = voters();
        let mut ae = AntiEntropy::new(0, 1);
        let ask = |bucket| Gossip::BucketRequest { shard: 0, bucket };
        let v = view(1, 1, 1, &vs, &[2, 3]);
        let served = (0..100)
            .filter(|i| {
                matches!(
                    ae.handle(2, ask(i % BUCKETS), v),
                    Action::ServeBucket { .. }
                )
            })
            .count();
        assert_eq!(served, BUCKETS_SERVED_PER_WINDOW as usize);
        assert!(matches!(
            ae.handle(3, ask(0), v),
            Action::ServeBucket { to: 3, bucket: 0 }
        ));
        assert_eq!(
            ae.handle(3, ask(BUCKETS), v),
            Action::None,
            "no such bucket"
        );
        for _ in 0..SERVE_WINDOW_TICKS {
            ae.tick();
        }
        assert!(matches!(
            ae.handle(2, ask(1), v),
            Action::ServeBucket { .. }
        ));
    }

    #[test]
    fn a_repair_is_installed_only_at_its_own_index() {
        let entry = BucketEntry {
            key: "k".into(),
            value: Bytes::from_static(b"v"),
            stamp: 1,
            request: 2,
        };
        // Replica 2 differs in buckets 5 to 8 from voters 1 and 3.
        let [_, mut ae, _] = round([leaves(0), damaged(&[5, 6, 7, 8]), leaves(0)]);
        assert_eq!(ae.asked().len(), 4);
        let source = ae.asked()[0].source;
        let other = if source == 1 { 3 } else { 1 };
        // Unasked contents, or from another server than the one asked, are
        // never taken.
        assert!(
            ae.received(source, 9, 20, vec![entry.clone()], 20)
                .is_none()
        );
        assert!(ae.received(other, 5, 20, vec![entry.clone()], 20).is_none());
        // Exactly there: now.
        assert!(
            ae.received(source, 5, 20, vec![entry.clone()], 20)
                .is_some()
        );
        // Behind: parked until the apply loop reaches 30, not before.
        assert!(
            ae.received(source, 6, 30, vec![entry.clone()], 25)
                .is_none()
        );
        assert!(ae.due(29).is_empty());
        assert_eq!(ae.due(30), vec![(source, 6, vec![entry.clone()])]);
        // Past it: dropped, never installed over later writes.
        assert!(
            ae.received(source, 7, 40, vec![entry.clone()], 41)
                .is_none()
        );
        assert!(ae.received(source, 8, 50, vec![entry], 45).is_none());
        assert!(ae.due(51).is_empty(), "jumped over 50: dropped");
    }

    #[test]
    fn gossip_round_trips_and_refuses_truncation() {
        let round = Round {
            term: 3,
            seq: 4,
            index: 9,
        };
        let all = [
            Gossip::Digest {
                shard: 1,
                round,
                leaves: leaves(3),
            },
            Gossip::DigestReply {
                shard: 1,
                round,
                leaves: leaves(4),
            },
            Gossip::Verdict {
                shard: 2,
                round,
                buckets: vec![(1, 2), (63, 3)],
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
