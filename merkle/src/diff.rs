//! Finding the leaves where two trees differ.
//!
//! Both trees are walked top-down from the full roots of their common prefix;
//! only subtrees whose hashes differ are opened, so `d` differing leaves cost
//! `O(d log n)` node comparisons. [`diff`] compares two local trees (no
//! hashing at all); [`RemoteDiff`] compares a local tree with a remote one
//! known only by its trusted root, fetching and verifying the remote nodes it
//! needs, round by round, as a Sans-IO exchange.

use crate::{Error, Hash, MerkleHasher, MerkleTree, Root, flat, hash::fold_full_roots};
use alloc::{collections::BTreeMap, vec::Vec};
use core::{fmt, marker::PhantomData, ops::Range};

/// Appends leaf range `r` to `out`, merging it with the previous range when
/// they touch. Ranges arrive in increasing order.
fn push_range(out: &mut Vec<Range<u64>>, r: Range<u64>) {
    match out.last_mut() {
        Some(last) if last.end == r.start => last.end = r.end,
        _ => out.push(r),
    }
}

fn leaf_range(node: u64) -> Range<u64> {
    let (first, end) = flat::leaf_range(node);
    first..end
}

/// Leaf ranges where `a` and `b` differ, sorted and merged. Leaves present in
/// only one of the trees count as differing.
pub fn diff<H: MerkleHasher>(a: &MerkleTree<H>, b: &MerkleTree<H>) -> Vec<Range<u64>> {
    let common = a.len().min(b.len());
    let mut out = Vec::new();
    for root in flat::full_roots(common) {
        diff_subtree(a, b, root, &mut out);
    }
    if a.len() != b.len() {
        push_range(&mut out, common..a.len().max(b.len()));
    }
    out
}

fn diff_subtree<H: MerkleHasher>(
    a: &MerkleTree<H>,
    b: &MerkleTree<H>,
    node: u64,
    out: &mut Vec<Range<u64>>,
) {
    if a.node(node) == b.node(node) {
        return;
    }
    match flat::children(node) {
        None => push_range(out, leaf_range(node)),
        Some((l, r)) => {
            diff_subtree(a, b, l, out);
            diff_subtree(a, b, r, out);
        }
    }
}

/// Most nodes one round of a [`RemoteDiff`] asks for; more are asked next round.
pub const MAX_NODES_PER_REQUEST: usize = 4096;

/// Sans-IO diff of a local tree against a remote tree known by its trusted
/// size and [`Root`].
///
/// Poll [`poll_request`](Self::poll_request) for the flat indices of remote
/// nodes to fetch, fetch them any way you like, hand the hashes (in the
/// requested order) to [`handle_nodes`](Self::handle_nodes), and repeat until
/// [`is_done`](Self::is_done). Every remote hash is checked against the root
/// before it is used, so a lying peer is caught, not believed. Pass the same
/// local tree at every step.
pub struct RemoteDiff<H> {
    remote_size: u64,
    remote_root: Root,
    /// Remote nodes already checked against the root.
    verified: BTreeMap<u64, Hash>,
    /// Verified remote nodes whose children must be fetched.
    to_open: Vec<u64>,
    /// Request sent and not yet answered.
    in_flight: Option<Vec<u64>>,
    started: bool,
    differing: Vec<Range<u64>>,
    hasher: PhantomData<fn() -> H>,
}

impl<H> fmt::Debug for RemoteDiff<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteDiff")
            .field("remote_size", &self.remote_size)
            .field("verified", &self.verified.len())
            .field("to_open", &self.to_open.len())
            .field("in_flight", &self.in_flight.as_ref().map(Vec::len))
            .finish_non_exhaustive()
    }
}

impl<H: MerkleHasher> RemoteDiff<H> {
    /// Starts a diff against the remote tree with `remote_size` leaves and
    /// `remote_root` (trusted, e.g. from a verified [`SignedRoot`](crate::SignedRoot)).
    pub fn new(remote_size: u64, remote_root: Root) -> Self {
        Self {
            remote_size,
            remote_root,
            verified: BTreeMap::new(),
            to_open: Vec::new(),
            in_flight: None,
            started: false,
            differing: Vec::new(),
            hasher: PhantomData,
        }
    }

    /// The next batch of remote nodes (flat indices) to fetch, if any and if
    /// no batch is outstanding.
    pub fn poll_request(&mut self) -> Option<Vec<u64>> {
        if self.in_flight.is_some() {
            return None;
        }
        let request: Vec<u64> = if !self.started {
            flat::full_roots(self.remote_size).collect()
        } else {
            let take = self.to_open.len().min(MAX_NODES_PER_REQUEST / 2);
            self.to_open[..take]
                .iter()
                .filter_map(|&p| flat::children(p))
                .flat_map(|(l, r)| [l, r])
                .collect()
        };
        if request.is_empty() {
            return None;
        }
        self.in_flight = Some(request.clone());
        Some(request)
    }

    /// Forgets the outstanding request (e.g. the connection dropped); the
    /// next [`poll_request`](Self::poll_request) asks again.
    pub fn reset_in_flight(&mut self) {
        self.in_flight = None;
    }

    /// Takes the remote hashes of the last requested nodes, in order.
    /// On error nothing changes.
    pub fn handle_nodes(&mut self, local: &MerkleTree<H>, hashes: &[Hash]) -> Result<(), Error> {
        let Some(request) = self.in_flight.as_ref() else {
            return Err(Error::Unexpected {
                what: "node hashes",
                id: hashes.len() as u64,
            });
        };
        if request.len() != hashes.len() {
            return Err(Error::ProofLength {
                expected: request.len(),
                actual: hashes.len(),
            });
        }
        let fetched: Vec<(u64, Hash)> = request
            .iter()
            .copied()
            .zip(hashes.iter().copied())
            .collect();
        let opened = if self.started {
            let opened = fetched.len() / 2;
            for (pair, &parent) in fetched.chunks_exact(2).zip(&self.to_open) {
                if let [(_, l), (_, r)] = pair
                    && Some(&H::hash_node(l, r)) != self.verified.get(&parent)
                {
                    return Err(Error::Forged {
                        what: "node",
                        index: parent,
                    });
                }
            }
            opened
        } else {
            let tree_hash = fold_full_roots::<H>(fetched.iter().map(|(_, h)| *h));
            if H::bind_root(self.remote_size, &tree_hash) != self.remote_root {
                return Err(Error::Forged {
                    what: "full roots",
                    index: self.remote_size,
                });
            }
            self.started = true;
            0
        };
        // Everything checked; now apply.
        self.in_flight = None;
        self.to_open.drain(..opened);
        let mut newly = Vec::new();
        for (index, hash) in fetched {
            self.verified.insert(index, hash);
            self.classify(local, index, hash, &mut newly);
        }
        self.to_open.extend(newly);
        // Keep the result sorted whatever order subtrees finish in.
        self.differing.sort_by_key(|r| r.start);
        Ok(())
    }

    /// Decides what a verified remote node means: equal subtree, differing
    /// leaf or range, or a subtree to open.
    fn classify(&mut self, local: &MerkleTree<H>, index: u64, hash: Hash, open: &mut Vec<u64>) {
        if local.node(index) == Some(hash) {
            return;
        }
        let range = leaf_range(index);
        if range.start >= local.len() || flat::depth(index) == 0 {
            self.differing.push(range);
        } else {
            open.push(index);
        }
    }

    /// Whether every differing range has been found.
    pub fn is_done(&self) -> bool {
        (self.started || self.remote_size == 0)
            && self.to_open.is_empty()
            && self.in_flight.is_none()
    }

    /// Leaf ranges where the local tree differs from the remote one, sorted
    /// and merged; complete once [`is_done`](Self::is_done). Local leaves past
    /// the remote size count as differing.
    pub fn differing(&self, local: &MerkleTree<H>) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        for r in &self.differing {
            push_range(&mut out, r.clone());
        }
        if local.len() > self.remote_size {
            push_range(&mut out, self.remote_size..local.len());
        }
        out
    }

    /// Remote node hashes verified so far, by flat index (remote leaf hashes
    /// of differing leaves among them).
    pub fn verified(&self) -> &BTreeMap<u64, Hash> {
        &self.verified
    }
}
