//! Witness members: voters that vote and acknowledge appends but never lead
//! and keep no state-machine data, so that two data nodes and one cheap
//! witness (2+1) survive the loss of any one of the three.
//!
//! # What a witness does
//!
//! * It is a voter ([`Configuration::with_witnesses`](crate::Configuration::with_witnesses),
//!   [`Node::add_witness`](crate::Node::add_witness)): it counts towards
//!   election and commit quorums like any voter, also in joint
//!   configurations, answers heartbeats (ReadIndex, leases, check-quorum)
//!   and grants votes and pre-votes with the ordinary up-to-date check on
//!   the (term, index) of its last entry.
//! * It never campaigns (no pre-vote or vote request of its own), ignores
//!   TimeoutNow, and [`Node::transfer_leadership`](crate::Node::transfer_leadership)
//!   to it fails with [`Error::WitnessCannotLead`](crate::Error::WitnessCannotLead).
//! * The leader sends it entries with their payload stripped: index and
//!   term kept, data empty, except configuration entries, which go whole
//!   so the witness knows the membership. The leader builds these from log
//!   positions without reading payloads, and fills the message size budget
//!   with the small stripped entries. A snapshot sent to it carries the
//!   metadata (index, term, configuration) and no data.
//! * Its application sees the same [`Ready`](crate::Ready) as on any node:
//!   entries to persist (payloads empty), hard state, committed entries
//!   (empty data, or configuration entries, which every application skips
//!   already), and snapshots whose `data` is empty. There is nothing to
//!   apply and no state machine to restore; compact with empty snapshot
//!   data. The same event loop runs a data node and a witness.
//! * Witness status is fixed for as long as the node is a member: a
//!   membership change keeps every witness that stays a voter a witness,
//!   refuses to make a witness a learner and refuses to turn a data node
//!   into a witness in place. A witness's disk must never become a data
//!   node's disk (its log has no payloads), also when the change that
//!   added it was rolled back: to turn a witness host into a data node,
//!   remove the witness and add a node under a new id with an empty disk.
//!
//! # Why Raft's guarantees still hold
//!
//! Nothing changes in how terms, votes, log positions and quorums work:
//! a witness stores every entry's index and term, so its log has exactly
//! the shape of a data node's, and the up-to-date check, the log matching
//! check on `prev_log_index`/`prev_log_term` and the commit rule all work
//! on that shape alone. Payloads are only read by a leader (to replicate)
//! and by state machines (to apply). So:
//!
//! * **Election safety** (one leader per term): votes and quorums are
//!   unchanged; a witness simply never asks for votes.
//! * **Log matching**: consistency checks use (index, term) only, which a
//!   witness stores exactly. Payloads are stripped only for nodes the
//!   leader's configuration names witnesses; a member's witness status
//!   never changes and a witness's disk never serves a data node (above),
//!   so no data node ever holds a stripped entry.
//! * **Leader completeness**: a committed entry is on a quorum; a leader
//!   won the votes of a quorum, each granted only to a candidate at least
//!   as up to date (§5.4.1, with the witness judging on the metadata it
//!   holds exactly); the two quorums intersect, so the leader's log holds
//!   the entry's (index, term). A leader is never a witness, and every
//!   non-witness stores full payloads, so the leader holds the entry's
//!   payload too.
//! * **State machine safety**: data nodes apply only entries they received
//!   from leaders whole, and every leader holds every committed entry
//!   whole (above), so all data nodes apply the same commands. Witnesses
//!   apply nothing.
//!
//! # The availability trade-off
//!
//! A witness holds the positions of recent entries but not their data, so
//! it cannot hand them to a data node. In 2+1, an entry committed on the
//! leader A and the witness W only (the other data node B lagging) exists
//! in full on A alone. If A goes down, B cannot win W's vote (W's log is
//! more up to date than B's), so the cluster waits for A instead of
//! electing B and losing the entry. Five plain voters would tolerate two
//! failures; 2+1 tolerates one failure of either data node only when the
//! other data node is caught up, and any one failure for safety.

use crate::storage::Snapshot;
use bytes::Bytes;

/// The snapshot as a witness receives it: metadata, no data.
pub(crate) fn snapshot_metadata_only(snapshot: &mut Snapshot) {
    snapshot.data = Bytes::new();
}
