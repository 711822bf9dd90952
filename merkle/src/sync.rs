//! Sans-IO block sync: a [`Sender`] that holds blocks and a signed root, and
//! a [`Receiver`] that wants the same blocks, verified.
//!
//! The exchange, all of it in typed [`Message`]s that you carry:
//!
//! 1. The receiver asks for the [`SignedRoot`] and checks its signature.
//! 2. It diffs its own blocks against that root ([`RemoteDiff`]), fetching
//!    only the remote nodes on paths to differing leaves, each checked
//!    against the root. Where a differing remote leaf hash matches a block the
//!    receiver already holds (moved data), it reuses its own copy.
//! 3. It asks for the remaining blocks by index (or, on request, by content
//!    hash), announcing the nodes it already holds (`have`), so the sender
//!    leaves those out of the proofs: a proof stops at the first node the
//!    receiver knows. Every block is checked before it is accepted; a block
//!    or node that contradicts the root is reported as an [`Error`] naming it.
//! 4. Requests unanswered for the request timeout (see
//!    [`Receiver::poll_timeout`] / [`Receiver::handle_timeout`]), or those
//!    sent to a peer that dropped ([`Receiver::on_peer_disconnect`]), are
//!    asked again; verified work is kept, so sync resumes where it stopped.
//!
//! One receiver can fetch from several senders at once: give each peer a
//! key `P` of your choosing and use [`Receiver::poll_transmit_to`],
//! [`Receiver::handle_from`] and [`Receiver::on_peer_disconnect`]. Every
//! request is tracked with the peer it went to, so a disconnect re-queues
//! exactly that peer's requests, and an answer is accepted only from the peer
//! that was asked and only while its request is live: a late answer to a
//! request already asked again elsewhere is refused as
//! [`Error::Unexpected`], never counted twice. With a single sender, the
//! receiver's peer type is `()` and [`Receiver::poll_transmit`],
//! [`Receiver::handle`] and [`Receiver::on_disconnect`] do the same without
//! naming it.
//!
//! A node that serves many receivers builds one [`Server`] (the tree is
//! built once) and opens a [`Sender`] session per peer with
//! [`Server::session`]; sessions share the tree. [`Sender::new`] is the
//! one-peer shorthand.
//!
//! Neither side does I/O, reads a clock or draws randomness: inputs are
//! [`Receiver::handle`] / [`Sender::handle`] and the `now` you pass in,
//! outputs are polled from `poll_transmit` and `poll_event` until `None`.
//! Only the receiver acts on time (it times out requests), so only its
//! `poll_transmit`/`handle_timeout` take `now`; a sender only answers, so
//! none of its methods takes a time.

use crate::{
    Error, Hash, MerkleHasher, MerkleTree, SignedRoot, Verifier,
    codec::{self, Reader},
    diff::RemoteDiff,
    flat,
    hash::fold_full_roots,
    signed::Signer,
};
use alloc::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    sync::Arc,
    vec::Vec,
};
use core::{fmt, time::Duration};

/// Identifies a request so its answer can be matched to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RequestId(pub u64);

/// Which block a receiver wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum BlockRef {
    /// The block at this leaf index.
    Index(u64),
    /// A block whose leaf hash ([`MerkleHasher::hash_leaf`]) is this.
    Hash(Hash),
}

/// A block with the proof nodes the receiver does not already hold.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Block {
    /// Leaf index of the block.
    pub index: u64,
    /// The block's bytes.
    pub data: Vec<u8>,
    /// Proof hashes, in the order the receiver's walk reads them.
    pub proof: Vec<Hash>,
}

/// Everything the two sides say to each other.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Message {
    /// Receiver to sender: send your signed root.
    GetSignedRoot,
    /// Sender to receiver: the signed root.
    SignedRoot(SignedRoot),
    /// Receiver to sender: the hashes of these nodes (flat indices).
    GetNodes {
        /// Request id.
        id: RequestId,
        /// Flat indices of the wanted nodes.
        nodes: Vec<u64>,
    },
    /// Sender to receiver: node hashes, in the requested order.
    Nodes {
        /// Id of the request answered.
        id: RequestId,
        /// One hash per requested node.
        hashes: Vec<Hash>,
    },
    /// Receiver to sender: these blocks, leaving the `have` nodes out of the proofs.
    GetBlocks {
        /// Request id.
        id: RequestId,
        /// The wanted blocks.
        blocks: Vec<BlockRef>,
        /// Flat indices of nodes the receiver already holds, verified.
        have: Vec<u64>,
    },
    /// Sender to receiver: one entry per requested block, `None` when a
    /// block asked for by hash is not in the tree.
    Blocks {
        /// Id of the request answered.
        id: RequestId,
        /// The blocks, in the requested order.
        blocks: Vec<Option<Block>>,
    },
}

/// How long a [`Receiver`] waits for an answer before asking again.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Most blocks in one [`Message::GetBlocks`].
pub const MAX_BLOCKS_PER_REQUEST: u64 = 256;
/// Most nodes in one [`Message::GetNodes`] or `have` list.
pub const MAX_NODES_PER_MESSAGE: u64 = 1 << 16;
/// Largest block accepted on the wire.
pub const MAX_BLOCK_LEN: u64 = 16 << 20;
const MAX_PROOF: u64 = 128;

impl Message {
    /// Compact binary encoding (a tag byte, LEB128 counts and ids, raw hashes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Message::GetSignedRoot => out.push(1),
            Message::SignedRoot(root) => {
                out.push(2);
                root.encode_into(&mut out);
            }
            Message::GetNodes { id, nodes } => {
                out.push(3);
                codec::put_varint(&mut out, id.0);
                codec::put_varint(&mut out, nodes.len() as u64);
                nodes.iter().for_each(|&n| codec::put_varint(&mut out, n));
            }
            Message::Nodes { id, hashes } => {
                out.push(4);
                codec::put_varint(&mut out, id.0);
                codec::put_hashes(&mut out, hashes);
            }
            Message::GetBlocks { id, blocks, have } => {
                out.push(5);
                codec::put_varint(&mut out, id.0);
                codec::put_varint(&mut out, blocks.len() as u64);
                for b in blocks {
                    match b {
                        BlockRef::Index(i) => {
                            out.push(0);
                            codec::put_varint(&mut out, *i);
                        }
                        BlockRef::Hash(h) => {
                            out.push(1);
                            out.extend_from_slice(&h.0);
                        }
                    }
                }
                codec::put_varint(&mut out, have.len() as u64);
                have.iter().for_each(|&n| codec::put_varint(&mut out, n));
            }
            Message::Blocks { id, blocks } => {
                out.push(6);
                codec::put_varint(&mut out, id.0);
                codec::put_varint(&mut out, blocks.len() as u64);
                for b in blocks {
                    match b {
                        None => out.push(0),
                        Some(b) => {
                            out.push(1);
                            codec::put_varint(&mut out, b.index);
                            codec::put_bytes(&mut out, &b.data);
                            codec::put_hashes(&mut out, &b.proof);
                        }
                    }
                }
            }
        }
        out
    }

    /// Decodes [`to_bytes`](Self::to_bytes) output. Never panics; counts are
    /// capped before anything is allocated.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes);
        let msg = match r.u8()? {
            1 => Message::GetSignedRoot,
            2 => Message::SignedRoot(SignedRoot::decode_from(&mut r)?),
            3 => {
                let id = RequestId(r.varint()?);
                let nodes = varints(&mut r, "node list")?;
                Message::GetNodes { id, nodes }
            }
            4 => Message::Nodes {
                id: RequestId(r.varint()?),
                hashes: r.hashes(MAX_NODES_PER_MESSAGE)?,
            },
            5 => {
                let id = RequestId(r.varint()?);
                let blocks = r.list("block list", MAX_BLOCKS_PER_REQUEST, 2, |r| {
                    match r.u8()? {
                        0 => Ok(BlockRef::Index(r.varint()?)),
                        1 => Ok(BlockRef::Hash(r.hash()?)),
                        tag => Err(Error::UnknownTag {
                            what: "block reference",
                            tag,
                        }),
                    }
                })?;
                let have = varints(&mut r, "have list")?;
                Message::GetBlocks { id, blocks, have }
            }
            6 => {
                let id = RequestId(r.varint()?);
                let blocks = r.list("block list", MAX_BLOCKS_PER_REQUEST, 1, |r| {
                    match r.u8()? {
                        0 => Ok(None),
                        1 => Ok(Some(Block {
                            index: r.varint()?,
                            data: r.bytes("block", MAX_BLOCK_LEN)?.to_vec(),
                            proof: r.hashes(MAX_PROOF)?,
                        })),
                        tag => Err(Error::UnknownTag {
                            what: "block entry",
                            tag,
                        }),
                    }
                })?;
                Message::Blocks { id, blocks }
            }
            tag => {
                return Err(Error::UnknownTag {
                    what: "message",
                    tag,
                });
            }
        };
        r.finish()?;
        Ok(msg)
    }
}

fn varints(r: &mut Reader<'_>, what: &'static str) -> Result<Vec<u64>, Error> {
    r.list(what, MAX_NODES_PER_MESSAGE, 1, Reader::varint)
}

/// Whether `node` is one of the full roots of a tree of `size` leaves.
fn is_full_root(node: u64, size: u64) -> bool {
    flat::is_complete(node, size) && !flat::is_complete(flat::parent(node), size)
}

/// The shape of a block proof, computed identically by both sides from the
/// leaf index, the tree size and the set of nodes the receiver holds.
#[derive(Debug, Default)]
struct Plan {
    /// Nodes the proof carries, in order.
    carried: Vec<u64>,
    /// Nodes the receiver holds (verified) once the block checks out.
    touched: Vec<u64>,
}

/// Walks from the leaf towards the root. The walk stops at the first node the
/// receiver holds (the computed hash must equal it) or at the leaf's full
/// root (the full roots must fold to the signed root).
fn plan(leaf: u64, size: u64, known: &BTreeSet<u64>) -> Plan {
    let mut p = Plan::default();
    let mut x = flat::leaf_index(leaf);
    p.touched.push(x);
    loop {
        if known.contains(&x) {
            return p;
        }
        if is_full_root(x, size) {
            for r in flat::full_roots(size).filter(|&r| r != x) {
                p.touched.push(r);
                if !known.contains(&r) {
                    p.carried.push(r);
                }
            }
            return p;
        }
        let s = flat::sibling(x);
        p.touched.push(s);
        if !known.contains(&s) {
            p.carried.push(s);
        }
        x = flat::parent(x);
        p.touched.push(x);
    }
}

/// Events a [`Receiver`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The signed root verified; sync targets this tree.
    RootVerified {
        /// Leaves of the remote tree.
        tree_size: u64,
    },
    /// The diff finished; this many blocks must be fetched.
    DiffDone {
        /// Blocks still to fetch.
        missing: u64,
        /// Blocks found locally under another index (moved data) and reused.
        reused: u64,
    },
    /// A block arrived and verified.
    BlockAccepted {
        /// Its leaf index.
        index: u64,
    },
    /// The sender has no block with this content hash.
    NotFound(Hash),
    /// Every block is present and verified.
    Complete,
}

/// One outstanding request: to whom, when, and what it asked.
#[derive(Debug)]
struct Request<P> {
    peer: P,
    sent: Duration,
    kind: InFlight,
}

#[derive(Debug)]
enum InFlight {
    Root,
    Nodes,
    Blocks {
        refs: Vec<BlockRef>,
        announced: BTreeSet<u64>,
    },
}

/// The side that wants the blocks, from one or several senders told apart by
/// a peer key `P` (`()` when there is only one). See the [module docs](self).
pub struct Receiver<H, V, P = ()> {
    verifier: V,
    local: MerkleTree<H>,
    local_blocks: Vec<Vec<u8>>,
    root: Option<SignedRoot>,
    diff: Option<RemoteDiff<H>>,
    /// Remote nodes verified against the signed root, by flat index.
    store: BTreeMap<u64, Hash>,
    /// The remote blocks, filled as they verify.
    result: Vec<Option<Vec<u8>>>,
    /// Leaves to fetch that are not in flight.
    missing: BTreeSet<u64>,
    by_hash: VecDeque<Hash>,
    /// Outstanding requests, with the peer each went to.
    in_flight: BTreeMap<RequestId, Request<P>>,
    request_timeout: Duration,
    next_id: u64,
    events: VecDeque<Event>,
    /// Most blocks requested from one peer and not yet answered.
    max_blocks_in_flight: usize,
    complete: bool,
}

impl<H, V, P> fmt::Debug for Receiver<H, V, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("root", &self.root)
            .field("verified_nodes", &self.store.len())
            .field("missing", &self.missing.len())
            .field("in_flight", &self.in_flight.len())
            .field("complete", &self.complete)
            .finish_non_exhaustive()
    }
}

impl<H: MerkleHasher, V: Verifier, P: Ord + Clone> Receiver<H, V, P> {
    /// A receiver that holds `local_blocks` (possibly none, possibly an older
    /// or different version) and trusts roots signed for `verifier`.
    /// `Receiver::<Sha256, _>::new(..)` is the single-sender receiver
    /// (`P = ()`); name `P` to fetch from several.
    pub fn new(local_blocks: Vec<Vec<u8>>, verifier: V) -> Self {
        Self {
            verifier,
            local: MerkleTree::from_leaves(&local_blocks),
            local_blocks,
            root: None,
            diff: None,
            store: BTreeMap::new(),
            result: Vec::new(),
            missing: BTreeSet::new(),
            by_hash: VecDeque::new(),
            in_flight: BTreeMap::new(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            next_id: 0,
            events: VecDeque::new(),
            max_blocks_in_flight: 4 * MAX_BLOCKS_PER_REQUEST as usize,
            complete: false,
        }
    }

    /// Asks for a block by content (leaf) hash once the root is known; the
    /// answer arrives as [`Event::BlockAccepted`] or [`Event::NotFound`].
    pub fn request_by_hash(&mut self, leaf_hash: Hash) {
        self.by_hash.push_back(leaf_hash);
    }

    /// The verified signed root, once received.
    pub fn signed_root(&self) -> Option<&SignedRoot> {
        self.root.as_ref()
    }

    /// Whether every block of the signed tree is present and verified.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// The synced blocks, once complete.
    pub fn blocks(&self) -> Option<Vec<&[u8]>> {
        if !self.complete {
            return None;
        }
        self.result.iter().map(|b| b.as_deref()).collect()
    }

    /// The synced blocks, moved out; `None` unless [`is_complete`](Self::is_complete).
    pub fn into_blocks(self) -> Option<Vec<Vec<u8>>> {
        if !self.complete {
            return None;
        }
        self.result.into_iter().collect()
    }

    /// Number of verified remote nodes held (what `have` announcements draw on).
    pub fn verified_nodes(&self) -> usize {
        self.store.len()
    }

    fn next_id(&mut self) -> RequestId {
        self.next_id += 1;
        RequestId(self.next_id)
    }

    /// The next request to send to `peer` at `now` (any monotonic time since
    /// an origin of your choosing), if any; it is recorded as in flight at
    /// `peer`. Poll each connected peer in turn to spread the work: the root
    /// and the diff's node batches go to whichever peer asks first, one at a
    /// time; block batches go to every peer, each holding at most
    /// `4 * MAX_BLOCKS_PER_REQUEST` blocks in flight.
    pub fn poll_transmit_to(&mut self, now: Duration, peer: P) -> Option<Message> {
        let Some(root) = self.root.as_ref() else {
            if self
                .in_flight
                .values()
                .any(|r| matches!(r.kind, InFlight::Root))
            {
                return None;
            }
            self.track(peer, now, InFlight::Root);
            return Some(Message::GetSignedRoot);
        };
        let size = root.tree_size;
        if let Some(nodes) = self.diff.as_mut().and_then(RemoteDiff::poll_request) {
            let id = self.track(peer, now, InFlight::Nodes);
            return Some(Message::GetNodes { id, nodes });
        }
        if self.diff.is_some() || self.blocks_in_flight_to(&peer) >= self.max_blocks_in_flight {
            return None;
        }
        let mut refs: Vec<BlockRef> = Vec::new();
        while (refs.len() as u64) < MAX_BLOCKS_PER_REQUEST {
            if let Some(h) = self.by_hash.pop_front() {
                refs.push(BlockRef::Hash(h));
            } else if let Some(i) = self.missing.pop_first() {
                refs.push(BlockRef::Index(i));
            } else {
                break;
            }
        }
        if refs.is_empty() {
            return None;
        }
        let announced = self.announce(&refs, size);
        let have = announced.iter().copied().collect();
        let id = self.track(
            peer,
            now,
            InFlight::Blocks {
                refs: refs.clone(),
                announced,
            },
        );
        Some(Message::GetBlocks {
            id,
            blocks: refs,
            have,
        })
    }

    /// Records a request to `peer` under a fresh id.
    fn track(&mut self, peer: P, sent: Duration, kind: InFlight) -> RequestId {
        let id = self.next_id();
        self.in_flight.insert(id, Request { peer, sent, kind });
        id
    }

    /// Blocks asked of `peer` and not yet answered.
    fn blocks_in_flight_to(&self, peer: &P) -> usize {
        self.in_flight
            .values()
            .filter(|r| r.peer == *peer)
            .map(|r| match &r.kind {
                InFlight::Blocks { refs, .. } => refs.len(),
                InFlight::Root | InFlight::Nodes => 0,
            })
            .sum()
    }

    /// Requests sent to `peer` and not yet answered, timed out or re-queued.
    pub fn requests_in_flight_to(&self, peer: &P) -> usize {
        self.in_flight.values().filter(|r| r.peer == *peer).count()
    }

    /// Held nodes worth announcing for these blocks: the lowest held node on
    /// each leaf's path (or the held siblings below it) and the full roots.
    fn announce(&self, refs: &[BlockRef], size: u64) -> BTreeSet<u64> {
        let mut have: BTreeSet<u64> = flat::full_roots(size)
            .filter(|r| self.store.contains_key(r))
            .collect();
        for r in refs {
            let BlockRef::Index(leaf) = r else { continue };
            let mut x = flat::leaf_index(*leaf);
            while !is_full_root(x, size) {
                if self.store.contains_key(&x) {
                    have.insert(x);
                    break;
                }
                let s = flat::sibling(x);
                if self.store.contains_key(&s) {
                    have.insert(s);
                }
                x = flat::parent(x);
            }
        }
        have
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The connection to `peer` dropped (or you dropped it for lying): the
    /// requests sent to it, and only those, are asked again by the next
    /// [`poll_transmit_to`](Self::poll_transmit_to) of any peer. Answers it
    /// may still deliver are refused as [`Error::Unexpected`]. Verified nodes
    /// and blocks are kept.
    pub fn on_peer_disconnect(&mut self, peer: &P) {
        let dropped: Vec<RequestId> = self
            .in_flight
            .iter()
            .filter(|(_, r)| r.peer == *peer)
            .map(|(id, _)| *id)
            .collect();
        for id in dropped {
            if let Some(r) = self.in_flight.remove(&id) {
                self.requeue(r.kind);
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called:
    /// the earliest moment an outstanding request expires.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.in_flight
            .values()
            .map(|r| r.sent.saturating_add(self.request_timeout))
            .min()
    }

    /// Gives up on requests unanswered for the request timeout at `now`;
    /// they are asked again by the next [`poll_transmit`](Self::poll_transmit).
    /// An answer that arrives later is refused as [`Error::Unexpected`]
    /// (late, not forged).
    pub fn handle_timeout(&mut self, now: Duration) {
        let expired: Vec<RequestId> = self
            .in_flight
            .iter()
            .filter(|(_, r)| r.sent.saturating_add(self.request_timeout) <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(r) = self.in_flight.remove(&id) {
                self.requeue(r.kind);
            }
        }
    }

    /// Sets how long a request may stay unanswered (default 5 s).
    pub fn set_request_timeout(&mut self, timeout: Duration) {
        self.request_timeout = timeout;
    }

    fn requeue(&mut self, f: InFlight) {
        match f {
            InFlight::Root => {}
            InFlight::Nodes => {
                if let Some(d) = self.diff.as_mut() {
                    d.reset_in_flight();
                }
            }
            InFlight::Blocks { refs, .. } => {
                for r in refs {
                    match r {
                        BlockRef::Index(i) => {
                            self.missing.insert(i);
                        }
                        BlockRef::Hash(h) => self.by_hash.push_back(h),
                    }
                }
            }
        }
    }

    /// The live request `id`, if it went to `peer`.
    fn request_to(&self, id: RequestId, peer: &P) -> Option<&InFlight> {
        self.in_flight
            .get(&id)
            .filter(|r| r.peer == *peer)
            .map(|r| &r.kind)
    }

    /// Takes a message from sender `peer`. Any message that is not accepted
    /// is an [`Error`] and changes nothing. [`Error::Forged`],
    /// [`Error::ProofLength`], [`Error::RootMismatch`] and
    /// [`Error::BadSignature`] are proof that the sender lies (or its data is
    /// corrupt): drop it and call [`on_peer_disconnect`](Self::on_peer_disconnect)
    /// so another peer is asked. [`Error::Unexpected`] only means an answer
    /// nobody is waiting for from `peer`: one that arrived after its request
    /// timed out or was re-queued by a disconnect, or that names a request
    /// sent to another peer.
    pub fn handle_from(&mut self, peer: &P, msg: Message) -> Result<(), Error> {
        match msg {
            Message::SignedRoot(signed) => self.on_root(peer, signed),
            Message::Nodes { id, hashes } => {
                let asked = matches!(self.request_to(id, peer), Some(InFlight::Nodes));
                let diff = match (asked, self.diff.as_mut()) {
                    (true, Some(diff)) => diff,
                    _ => {
                        return Err(Error::Unexpected {
                            what: "node hashes",
                            id: id.0,
                        });
                    }
                };
                diff.handle_nodes(&self.local, &hashes)?;
                self.in_flight.remove(&id);
                if diff.is_done() {
                    self.finish_diff();
                }
                Ok(())
            }
            Message::Blocks { id, blocks } => self.on_blocks(peer, id, blocks),
            Message::GetSignedRoot | Message::GetNodes { .. } | Message::GetBlocks { .. } => {
                Err(Error::Unexpected {
                    what: "request",
                    id: 0,
                })
            }
        }
    }

    fn on_root(&mut self, peer: &P, signed: SignedRoot) -> Result<(), Error> {
        if let Some(known) = &self.root {
            // A resumed session must be about the same tree.
            return if *known == signed {
                Ok(())
            } else {
                Err(Error::Unexpected {
                    what: "root",
                    id: signed.tree_size,
                })
            };
        }
        let Some(id) = self
            .in_flight
            .iter()
            .find(|(_, r)| r.peer == *peer && matches!(r.kind, InFlight::Root))
            .map(|(id, _)| *id)
        else {
            return Err(Error::Unexpected {
                what: "root",
                id: signed.tree_size,
            });
        };
        signed.verify(&self.verifier)?;
        let size = signed.tree_size;
        // Slots for every remote block; refuse absurd sizes rather than abort.
        let slots = usize::try_from(size).map_err(|_| Error::SizeOutOfRange {
            size,
            limit: usize::MAX as u64,
        })?;
        let mut result = Vec::new();
        result
            .try_reserve_exact(slots)
            .map_err(|_| Error::SizeOutOfRange { size, limit: 0 })?;
        result.resize(slots, None);
        self.in_flight.remove(&id);
        self.result = result;
        self.diff = Some(RemoteDiff::new(size, signed.root));
        self.root = Some(signed);
        self.events
            .push_back(Event::RootVerified { tree_size: size });
        if self.diff.as_ref().is_some_and(RemoteDiff::is_done) {
            self.finish_diff();
        }
        Ok(())
    }

    fn finish_diff(&mut self) {
        let Some(diff) = self.diff.take() else { return };
        let size = self.result.len() as u64;
        self.store
            .extend(diff.verified().iter().map(|(k, v)| (*k, *v)));
        let differing = diff.differing(&self.local);
        let local_by_hash: BTreeMap<Hash, usize> = (0..self.local_blocks.len())
            .filter_map(|i| self.local.leaf_hash(i as u64).map(|h| (h, i)))
            .collect();
        let mut is_diff = differing
            .iter()
            .flat_map(|r| r.clone())
            .filter(|&i| i < size)
            .peekable();
        let mut reused = 0;
        for i in 0..size {
            let same = is_diff.peek() != Some(&i);
            if !same {
                is_diff.next();
            }
            let local = if same {
                self.local_blocks.get(i as usize)
            } else {
                // A differing leaf whose remote hash we verified may be a
                // block we hold at another index.
                let copy = self
                    .store
                    .get(&flat::leaf_index(i))
                    .and_then(|h| local_by_hash.get(h));
                reused += u64::from(copy.is_some());
                copy.and_then(|&j| self.local_blocks.get(j))
            };
            match (local, self.result.get_mut(i as usize)) {
                (Some(block), Some(slot)) => *slot = Some(block.clone()),
                _ => {
                    self.missing.insert(i);
                }
            }
        }
        self.events.push_back(Event::DiffDone {
            missing: self.missing.len() as u64,
            reused,
        });
        self.check_complete();
    }

    fn check_complete(&mut self) {
        if !self.complete
            && self.root.is_some()
            && self.diff.is_none()
            && self.missing.is_empty()
            && self.by_hash.is_empty()
            && self.in_flight.is_empty()
            && self.result.iter().all(Option::is_some)
        {
            self.complete = true;
            self.events.push_back(Event::Complete);
        }
    }

    fn on_blocks(
        &mut self,
        peer: &P,
        id: RequestId,
        blocks: Vec<Option<Block>>,
    ) -> Result<(), Error> {
        let Some(InFlight::Blocks { refs, announced }) = self.request_to(id, peer) else {
            return Err(Error::Unexpected {
                what: "blocks",
                id: id.0,
            });
        };
        let size = self.result.len() as u64;
        if blocks.len() != refs.len() {
            return Err(Error::ProofLength {
                expected: refs.len(),
                actual: blocks.len(),
            });
        }
        let mut known = announced.clone();
        let mut pending: BTreeMap<u64, Hash> = BTreeMap::new();
        // (index, data, answers a request by content hash)
        let mut accepted: Vec<(u64, &[u8], bool)> = Vec::new();
        let mut not_found = Vec::new();
        for (r, b) in refs.iter().zip(&blocks) {
            let block = match (r, b) {
                (BlockRef::Hash(h), None) => {
                    not_found.push(*h);
                    continue;
                }
                (BlockRef::Index(i), None) => {
                    return Err(Error::Forged {
                        what: "missing block",
                        index: *i,
                    });
                }
                (BlockRef::Index(i), Some(b)) if b.index != *i => {
                    return Err(Error::Forged {
                        what: "block index",
                        index: b.index,
                    });
                }
                (_, Some(b)) => b,
            };
            let leaf = H::hash_leaf(&block.data);
            if matches!(r, BlockRef::Hash(h) if *h != leaf) {
                return Err(Error::Forged {
                    what: "block",
                    index: block.index,
                });
            }
            if block.index >= size {
                return Err(Error::LeafOutOfRange {
                    index: block.index,
                    size,
                });
            }
            self.verify_block(block.index, leaf, &block.proof, &known, &mut pending)?;
            known.extend(plan(block.index, size, &known).touched);
            accepted.push((block.index, &block.data, matches!(r, BlockRef::Hash(_))));
        }
        // Everything verified: apply. A block already filled (e.g. fetched
        // by content hash meanwhile) is reported once, not again.
        for (i, data, by_hash) in accepted {
            let mut fresh = false;
            if let Some(slot @ None) = self.result.get_mut(i as usize) {
                *slot = Some(data.to_vec());
                fresh = true;
            }
            self.missing.remove(&i);
            if fresh || by_hash {
                self.events.push_back(Event::BlockAccepted { index: i });
            }
        }
        self.events
            .extend(not_found.into_iter().map(Event::NotFound));
        self.store.extend(pending);
        self.in_flight.remove(&id);
        self.check_complete();
        Ok(())
    }

    /// Checks one block along its [`plan`], recording the nodes it proves in
    /// `pending`.
    fn verify_block(
        &self,
        leaf: u64,
        leaf_hash: Hash,
        proof: &[Hash],
        known: &BTreeSet<u64>,
        pending: &mut BTreeMap<u64, Hash>,
    ) -> Result<(), Error> {
        let size = self.result.len() as u64;
        let p = plan(leaf, size, known);
        if p.carried.len() != proof.len() {
            return Err(Error::ProofLength {
                expected: p.carried.len(),
                actual: proof.len(),
            });
        }
        let forged = Error::Forged {
            what: "block",
            index: leaf,
        };
        let mut proof = proof.iter();
        let held = |i: u64| pending.get(&i).or_else(|| self.store.get(&i)).copied();
        let mut value = |i: u64| -> Result<Hash, Error> {
            if known.contains(&i) {
                held(i).ok_or(Error::Forged {
                    what: "node",
                    index: i,
                })
            } else {
                proof.next().copied().ok_or(Error::RootMismatch)
            }
        };
        let mut proven: Vec<(u64, Hash)> = Vec::new();
        let mut x = flat::leaf_index(leaf);
        let mut h = leaf_hash;
        loop {
            proven.push((x, h));
            if known.contains(&x) {
                if held(x) != Some(h) {
                    return Err(forged);
                }
                break;
            }
            if is_full_root(x, size) {
                let mut roots = Vec::new();
                for r in flat::full_roots(size) {
                    let v = if r == x { h } else { value(r)? };
                    roots.push((r, v));
                }
                let tree_hash = fold_full_roots::<H>(roots.iter().map(|(_, v)| *v));
                let root = self.root.as_ref().map(|r| r.root);
                if Some(H::bind_root(size, &tree_hash)) != root {
                    return Err(forged);
                }
                proven.extend(roots);
                break;
            }
            let s = flat::sibling(x);
            let sv = value(s)?;
            proven.push((s, sv));
            h = if flat::is_left(x) {
                H::hash_node(&h, &sv)
            } else {
                H::hash_node(&sv, &h)
            };
            x = flat::parent(x);
        }
        pending.extend(proven);
        Ok(())
    }
}

/// The single-sender API: the peer is `()`.
impl<H: MerkleHasher, V: Verifier> Receiver<H, V, ()> {
    /// The next message to send at `now` (any monotonic time since an
    /// origin of your choosing), if any.
    pub fn poll_transmit(&mut self, now: Duration) -> Option<Message> {
        self.poll_transmit_to(now, ())
    }

    /// Takes a message from the sender; see [`handle_from`](Self::handle_from).
    pub fn handle(&mut self, msg: Message) -> Result<(), Error> {
        self.handle_from(&(), msg)
    }

    /// The connection dropped: what was in flight is asked again next time.
    /// Verified nodes and blocks are kept.
    pub fn on_disconnect(&mut self) {
        self.on_peer_disconnect(&());
    }
}

/// What a sending node serves, built once: the tree, the blocks, the signed
/// root and the content-hash index.
struct Served<H> {
    tree: MerkleTree<H>,
    blocks: Vec<Vec<u8>>,
    signed: SignedRoot,
    by_hash: BTreeMap<Hash, u64>,
}

/// The side that holds the blocks, for any number of receivers: it builds
/// the tree once and hands each peer its own [`Sender`] session over the same
/// shared tree. Cloning a `Server` is cheap (a reference count); so is a
/// session. See the [module docs](self).
pub struct Server<H> {
    served: Arc<Served<H>>,
}

impl<H> Clone for Server<H> {
    fn clone(&self) -> Self {
        Self {
            served: Arc::clone(&self.served),
        }
    }
}

impl<H> fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("signed", &self.served.signed)
            .finish_non_exhaustive()
    }
}

impl<H: MerkleHasher> Server<H> {
    /// A server for `blocks`, signing their root with `signer`.
    pub fn new(blocks: Vec<Vec<u8>>, signer: &impl Signer) -> Self {
        let tree = MerkleTree::<H>::from_leaves(&blocks);
        let signed = SignedRoot::sign(tree.len(), tree.root(), signer);
        Self::assemble(tree, blocks, signed)
    }

    /// A server for `blocks` with a root signed elsewhere. Fails with
    /// [`Error::SignedRootMismatch`] if the signed size or root is not the
    /// blocks' own. (The signature itself is the receivers' to check.)
    pub fn with_signed_root(blocks: Vec<Vec<u8>>, signed: SignedRoot) -> Result<Self, Error> {
        let tree = MerkleTree::<H>::from_leaves(&blocks);
        if tree.len() != signed.tree_size || tree.root() != signed.root {
            return Err(Error::SignedRootMismatch {
                signed_size: signed.tree_size,
                size: tree.len(),
            });
        }
        Ok(Self::assemble(tree, blocks, signed))
    }

    fn assemble(tree: MerkleTree<H>, blocks: Vec<Vec<u8>>, signed: SignedRoot) -> Self {
        let mut by_hash = BTreeMap::new();
        for i in (0..tree.len()).rev() {
            if let Some(h) = tree.leaf_hash(i) {
                by_hash.insert(h, i); // the lowest index wins
            }
        }
        Self {
            served: Arc::new(Served {
                tree,
                blocks,
                signed,
                by_hash,
            }),
        }
    }

    /// A session serving `peer`, over this server's tree (nothing is rebuilt).
    pub fn session<P>(&self, peer: P) -> Sender<H, P> {
        Sender {
            served: Arc::clone(&self.served),
            peer,
            outbox: VecDeque::new(),
        }
    }

    /// The tree being served.
    pub fn tree(&self) -> &MerkleTree<H> {
        &self.served.tree
    }

    /// The signed root being served.
    pub fn signed_root(&self) -> &SignedRoot {
        &self.served.signed
    }
}

/// One receiver's session with a [`Server`]: it answers that peer's
/// requests from the server's shared tree. `P` names the peer (`()` for a
/// sender made on its own with [`Sender::new`]).
pub struct Sender<H, P = ()> {
    served: Arc<Served<H>>,
    peer: P,
    outbox: VecDeque<Message>,
}

impl<H, P: fmt::Debug> fmt::Debug for Sender<H, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("peer", &self.peer)
            .field("signed", &self.served.signed)
            .field("queued", &self.outbox.len())
            .finish_non_exhaustive()
    }
}

impl<H: MerkleHasher> Sender<H, ()> {
    /// A single sender for `blocks`, signing their root with `signer`: the
    /// one session of a fresh [`Server`]. To serve several peers, make one
    /// `Server` and call [`Server::session`] for each.
    pub fn new(blocks: Vec<Vec<u8>>, signer: &impl Signer) -> Self {
        Server::new(blocks, signer).session(())
    }

    /// A single sender for `blocks` with a root signed elsewhere; see
    /// [`Server::with_signed_root`].
    pub fn with_signed_root(blocks: Vec<Vec<u8>>, signed: SignedRoot) -> Result<Self, Error> {
        Ok(Server::with_signed_root(blocks, signed)?.session(()))
    }
}

impl<H: MerkleHasher, P> Sender<H, P> {
    /// The peer this session serves.
    pub fn peer(&self) -> &P {
        &self.peer
    }

    /// A handle on the server this session belongs to, to open more sessions.
    pub fn server(&self) -> Server<H> {
        Server {
            served: Arc::clone(&self.served),
        }
    }

    /// The tree being served.
    pub fn tree(&self) -> &MerkleTree<H> {
        &self.served.tree
    }

    /// The signed root being served.
    pub fn signed_root(&self) -> &SignedRoot {
        &self.served.signed
    }

    /// The next message to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Message> {
        self.outbox.pop_front()
    }

    /// Takes a request from a receiver and queues the answer. A malformed
    /// request is an [`Error`] and queues nothing.
    pub fn handle(&mut self, msg: Message) -> Result<(), Error> {
        let reply = match msg {
            Message::GetSignedRoot => Message::SignedRoot(self.served.signed.clone()),
            Message::GetNodes { id, nodes } => {
                if nodes.len() as u64 > MAX_NODES_PER_MESSAGE {
                    return Err(Error::TooLong {
                        what: "node list",
                        len: nodes.len() as u64,
                        max: MAX_NODES_PER_MESSAGE,
                    });
                }
                let hashes = nodes
                    .iter()
                    .map(|&n| {
                        self.served.tree.node(n).ok_or(Error::NodeOutOfRange {
                            index: n,
                            size: self.served.tree.len(),
                        })
                    })
                    .collect::<Result<_, _>>()?;
                Message::Nodes { id, hashes }
            }
            Message::GetBlocks { id, blocks, have } => self.answer_blocks(id, &blocks, have)?,
            Message::SignedRoot(_) | Message::Nodes { .. } | Message::Blocks { .. } => {
                return Err(Error::Unexpected {
                    what: "answer",
                    id: 0,
                });
            }
        };
        self.outbox.push_back(reply);
        Ok(())
    }

    fn answer_blocks(
        &self,
        id: RequestId,
        refs: &[BlockRef],
        have: Vec<u64>,
    ) -> Result<Message, Error> {
        if refs.len() as u64 > MAX_BLOCKS_PER_REQUEST {
            return Err(Error::TooLong {
                what: "block list",
                len: refs.len() as u64,
                max: MAX_BLOCKS_PER_REQUEST,
            });
        }
        if have.len() as u64 > MAX_NODES_PER_MESSAGE {
            return Err(Error::TooLong {
                what: "have list",
                len: have.len() as u64,
                max: MAX_NODES_PER_MESSAGE,
            });
        }
        let served = &*self.served;
        let size = served.tree.len();
        let mut known: BTreeSet<u64> = have.into_iter().collect();
        let mut out = Vec::with_capacity(refs.len());
        for r in refs {
            let index = match *r {
                BlockRef::Index(i) if i < size => i,
                BlockRef::Index(i) => return Err(Error::LeafOutOfRange { index: i, size }),
                BlockRef::Hash(h) => match served.by_hash.get(&h) {
                    Some(&i) => i,
                    None => {
                        out.push(None);
                        continue;
                    }
                },
            };
            let p = plan(index, size, &known);
            let proof = p
                .carried
                .iter()
                .filter_map(|&n| served.tree.node(n))
                .collect();
            let data = served
                .blocks
                .get(index as usize)
                .cloned()
                .unwrap_or_default();
            known.extend(p.touched);
            out.push(Some(Block { index, data, proof }));
        }
        Ok(Message::Blocks { id, blocks: out })
    }
}

#[cfg(test)]
#[cfg(feature = "sha2")]
mod peer_tests {
    //! Per-peer tracking of requests: disconnects, late and misdirected answers.
    use super::*;
    use crate::Sha256;

    /// A keyed-hash "signature": enough to exercise the root check.
    #[derive(Debug, Clone)]
    struct Key;

    impl Signer for Key {
        fn sign(&self, message: &[u8]) -> Vec<u8> {
            Sha256::hash_parts(&[b"key", message]).0.to_vec()
        }
    }

    impl Verifier for Key {
        fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
            self.sign(message) == signature
        }
    }

    const A: u8 = 1;
    const B: u8 = 2;
    const C: u8 = 3;
    const T0: Duration = Duration::ZERO;

    fn remote(n: u32) -> Vec<Vec<u8>> {
        (0..n).map(|i| i.to_le_bytes().to_vec()).collect()
    }

    /// Asks `sender` and returns its answer.
    fn answer(sender: &mut Sender<Sha256>, request: Message) -> Message {
        sender.handle(request).unwrap();
        sender.poll_transmit().unwrap()
    }

    fn block_indices(m: &Message) -> Vec<u64> {
        match m {
            Message::GetBlocks { blocks, .. } => blocks
                .iter()
                .filter_map(|r| match r {
                    BlockRef::Index(i) => Some(*i),
                    BlockRef::Hash(_) => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    fn accepted(r: &mut Receiver<Sha256, Key, u8>) -> Vec<u64> {
        core::iter::from_fn(|| r.poll_event())
            .filter_map(|e| match e {
                Event::BlockAccepted { index } => Some(index),
                _ => None,
            })
            .collect()
    }

    /// An empty receiver that knows the root and diff of `n` remote
    /// blocks (fetched from `A`), ready to ask for blocks.
    fn past_diff(n: u32) -> (Sender<Sha256>, Receiver<Sha256, Key, u8>) {
        let mut sender = Sender::<Sha256>::new(remote(n), &Key);
        let mut rx = Receiver::<Sha256, Key, u8>::new(Vec::new(), Key);
        while rx.diff.is_some() || rx.root.is_none() {
            let m = rx.poll_transmit_to(T0, A).unwrap();
            let reply = answer(&mut sender, m);
            rx.handle_from(&A, reply).unwrap();
        }
        while rx.poll_event().is_some() {}
        (sender, rx)
    }

    #[test]
    fn a_disconnect_requeues_only_that_peers_requests() {
        let (mut sender, mut rx) = past_diff(1024);
        let to_a = rx.poll_transmit_to(T0, A).unwrap();
        let to_b = rx.poll_transmit_to(T0, B).unwrap();
        let asked_a = block_indices(&to_a);
        assert_eq!(asked_a, (0..256).collect::<Vec<_>>());
        assert_eq!(block_indices(&to_b), (256..512).collect::<Vec<_>>());
        assert_eq!(rx.requests_in_flight_to(&A), 1);
        assert_eq!(rx.requests_in_flight_to(&B), 1);

        rx.on_peer_disconnect(&A);
        assert_eq!(rx.requests_in_flight_to(&A), 0);
        assert_eq!(rx.requests_in_flight_to(&B), 1, "B's request must survive");
        // B's answer is still good.
        let reply = answer(&mut sender, to_b);
        rx.handle_from(&B, reply).unwrap();
        assert_eq!(accepted(&mut rx), (256..512).collect::<Vec<_>>());
        // A's blocks are the next ones asked, of anyone; nothing of B's is re-asked.
        let to_c = rx.poll_transmit_to(T0, C).unwrap();
        assert_eq!(block_indices(&to_c), asked_a);
    }

    #[test]
    fn a_late_answer_after_a_disconnect_is_refused_and_not_counted_twice() {
        let (mut sender, mut rx) = past_diff(300);
        let to_a = rx.poll_transmit_to(T0, A).unwrap();
        let late = answer(&mut sender, to_a);
        rx.on_peer_disconnect(&A);
        let to_b = rx.poll_transmit_to(T0, B).unwrap();
        let fresh = answer(&mut sender, to_b);

        // The answer A sent before it dropped arrives after all.
        assert!(matches!(
            rx.handle_from(&A, late.clone()),
            Err(Error::Unexpected { .. })
        ));
        assert!(accepted(&mut rx).is_empty());
        rx.handle_from(&B, fresh).unwrap();
        assert_eq!(accepted(&mut rx), (0..256).collect::<Vec<_>>());
        // Replayed once more, from anyone: still refused, still counted once.
        for peer in [A, B, C] {
            assert!(matches!(
                rx.handle_from(&peer, late.clone()),
                Err(Error::Unexpected { .. })
            ));
        }
        assert!(accepted(&mut rx).is_empty());
    }

    #[test]
    fn an_answer_is_accepted_only_from_the_peer_asked() {
        let (mut sender, mut rx) = past_diff(40);
        let to_a = rx.poll_transmit_to(T0, A).unwrap();
        let reply = answer(&mut sender, to_a);
        assert!(matches!(
            rx.handle_from(&B, reply.clone()),
            Err(Error::Unexpected { .. })
        ));
        assert!(accepted(&mut rx).is_empty());
        assert_eq!(rx.requests_in_flight_to(&A), 1, "A's request is still live");
        rx.handle_from(&A, reply).unwrap();
        assert_eq!(accepted(&mut rx).len(), 40);
        assert!(rx.is_complete());
    }

    #[test]
    fn the_root_is_taken_only_from_the_peer_asked() {
        let mut sender = Sender::<Sha256>::new(remote(10), &Key);
        let mut rx = Receiver::<Sha256, Key, u8>::new(Vec::new(), Key);
        let get = rx.poll_transmit_to(T0, A).unwrap();
        assert_eq!(get, Message::GetSignedRoot);
        // One root request at a time, whoever asks.
        assert_eq!(rx.poll_transmit_to(T0, B), None);
        let root = answer(&mut sender, get);
        assert!(matches!(
            rx.handle_from(&B, root.clone()),
            Err(Error::Unexpected { .. })
        ));
        assert!(rx.signed_root().is_none());
        rx.handle_from(&A, root).unwrap();
        assert!(rx.signed_root().is_some());
    }

    #[test]
    fn a_node_request_is_reset_only_by_its_own_peers_disconnect() {
        let mut local = remote(64);
        local[5] = b"stale".to_vec();
        let mut sender = Sender::<Sha256>::new(remote(64), &Key);
        let mut rx = Receiver::<Sha256, Key, u8>::new(local, Key);
        let get = rx.poll_transmit_to(T0, A).unwrap();
        let root = answer(&mut sender, get);
        rx.handle_from(&A, root).unwrap();
        let nodes = rx.poll_transmit_to(T0, A).unwrap();
        assert!(matches!(nodes, Message::GetNodes { .. }));
        // The diff asks one batch at a time: B gets nothing meanwhile.
        assert_eq!(rx.poll_transmit_to(T0, B), None);
        rx.on_peer_disconnect(&B);
        assert_eq!(
            rx.poll_transmit_to(T0, B),
            None,
            "B's drop must not reset A's batch"
        );
        rx.on_peer_disconnect(&A);
        let again = rx.poll_transmit_to(T0, B).unwrap();
        let (Message::GetNodes { nodes: n1, .. }, Message::GetNodes { nodes: n2, .. }) =
            (&nodes, &again)
        else {
            panic!("expected node requests, got {again:?}");
        };
        assert_eq!(n1, n2);
        // Finish through B: the stale leaf is the one fetched.
        let mut m = Some(again);
        let mut got = Vec::new();
        while let Some(req) = m {
            let reply = answer(&mut sender, req);
            rx.handle_from(&B, reply).unwrap();
            got.extend(accepted(&mut rx));
            m = rx.poll_transmit_to(T0, B);
        }
        assert_eq!(got, [5]);
        assert!(rx.is_complete());
    }

    #[test]
    fn a_block_fetched_by_hash_and_by_index_is_accepted_once() {
        let blocks = remote(20);
        let mut local = blocks.clone();
        local[3] = b"old".to_vec();
        let mut sender = Sender::<Sha256>::new(blocks.clone(), &Key);
        let mut rx = Receiver::<Sha256, Key, u8>::new(local, Key);
        rx.request_by_hash(Sha256::hash_leaf(&blocks[3]));
        let mut got = Vec::new();
        while let Some(m) = rx.poll_transmit_to(T0, A) {
            let reply = answer(&mut sender, m);
            rx.handle_from(&A, reply).unwrap();
            got.extend(accepted(&mut rx));
        }
        assert!(rx.is_complete());
        assert_eq!(got, [3], "block 3 wanted twice, reported once");
    }

    #[test]
    fn blocks_in_flight_are_capped_per_peer() {
        let (_, mut rx) = past_diff(4096);
        let cap = 4 * MAX_BLOCKS_PER_REQUEST as usize;
        for peer in [A, B] {
            let asked: usize = core::iter::from_fn(|| rx.poll_transmit_to(T0, peer))
                .map(|m| block_indices(&m).len())
                .sum();
            assert_eq!(asked, cap, "peer {peer}");
        }
    }
}
