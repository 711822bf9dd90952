//! The batch of work a node hands to the application.

use crate::message::Message;
use crate::storage::Snapshot;
use crate::types::{Entry, HardState, LogIndex, NodeId};

/// A node's role in its current term (§5.1).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Role {
    /// Follows a leader, or waits for one.
    #[default]
    Follower,
    /// Asks whether it could win an election, without changing terms
    /// (pre-vote, thesis §9.6).
    PreCandidate,
    /// Asks for votes to become leader.
    Candidate,
    /// Accepts proposals and replicates the log.
    Leader,
}

/// Volatile state the application may want to observe: who leads.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct SoftState {
    /// The leader of the current term, if known.
    pub leader: Option<NodeId>,
    /// This node's role.
    pub role: Role,
}

/// A read confirmed by ReadIndex (thesis §6.4): once the state machine has
/// applied up to `index`, a read served from it is linearizable.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ReadState {
    /// The id the application gave to [`Node::read_index`](crate::Node::read_index).
    pub id: u64,
    /// Serve the read once the applied index reaches this.
    pub index: LogIndex,
}

/// Work for the application: persist, send, apply. Obtained from
/// [`Node::ready`](crate::Node::ready) and returned, once done, to
/// [`Node::advance`](crate::Node::advance).
///
/// Everything in a `Ready` may be done at once and in any order: its
/// messages never depend on the state it asks to persist (replies that do
/// are held inside the node until you call `advance`). What you must
/// guarantee before `advance(ready)`:
///
/// 1. [`snapshot`](Ready::snapshot), then [`entries`](Ready::entries) and
///    [`hard_state`](Ready::hard_state) are durable (in that order, or
///    atomically), and the state machine is restored from the snapshot, and
/// 2. [`committed_entries`](Ready::committed_entries) are applied to your
///    state machine, in order.
///
/// Readies must be advanced in the order they were produced.
#[derive(Debug)]
#[must_use = "a Ready must be persisted, applied and handed back to Node::advance"]
pub struct Ready {
    pub(crate) seq: u64,
    pub(crate) messages: Vec<Message>,
    pub(crate) entries: Vec<Entry>,
    pub(crate) hard_state: Option<HardState>,
    pub(crate) committed_entries: Vec<Entry>,
    pub(crate) soft_state: Option<SoftState>,
    pub(crate) read_states: Vec<ReadState>,
    // Boxed: rare, and a Ready is moved on every cycle.
    pub(crate) snapshot: Option<Box<Snapshot>>,
}

impl Ready {
    /// Messages to send now. They may be lost, duplicated or reordered.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// Moves the messages out, to send them without cloning.
    pub fn take_messages(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.messages)
    }

    /// Log entries to append to stable storage. The first one may have an
    /// index at or before the stored last index: stored entries from that
    /// index on must be discarded (they conflict with the leader's log).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Moves the entries to persist out (for a store that keeps them, as
    /// [`LogStorage::persist`](crate::LogStorage::persist) does). The Ready
    /// can still be passed to [`Node::advance`](crate::Node::advance)
    /// afterwards: it records what was handed out when the Ready was made.
    pub fn take_entries(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.entries)
    }

    /// The hard state to persist, if it changed.
    pub fn hard_state(&self) -> Option<HardState> {
        self.hard_state
    }

    /// Committed entries to apply to the state machine, in order. They are
    /// already durable on this node. On a [witness](crate::witness) their
    /// data is empty (or a configuration entry): nothing to apply.
    pub fn committed_entries(&self) -> &[Entry] {
        &self.committed_entries
    }

    /// Moves the committed entries out.
    pub fn take_committed_entries(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.committed_entries)
    }

    /// The new soft state, if the role or the known leader changed.
    pub fn soft_state(&self) -> Option<SoftState> {
        self.soft_state
    }

    /// Reads confirmed by ReadIndex: serve each once the applied index
    /// reaches its `index`.
    pub fn read_states(&self) -> &[ReadState] {
        &self.read_states
    }

    /// Moves the confirmed reads out.
    pub fn take_read_states(&mut self) -> Vec<ReadState> {
        std::mem::take(&mut self.read_states)
    }

    /// A snapshot the leader sent, which replaces this node's log: persist
    /// it (it replaces every stored entry) and restore the state machine
    /// from its data before the entries of this Ready. A Ready with a
    /// snapshot carries no committed entries: the snapshot stands for them.
    /// On a [witness](crate::witness) its data is empty: store the
    /// metadata, there is no state to restore.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_deref()
    }

    /// Moves the snapshot out.
    pub fn take_snapshot(&mut self) -> Option<Snapshot> {
        self.snapshot.take().map(|s| *s)
    }

    /// The position of this Ready in the sequence `advance` expects.
    pub fn sequence(&self) -> u64 {
        self.seq
    }

    /// Whether there is anything to persist (entries or hard state).
    pub fn must_persist(&self) -> bool {
        !self.entries.is_empty() || self.hard_state.is_some() || self.snapshot.is_some()
    }
}
