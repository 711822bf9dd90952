//! The safety properties of figure 3 of the paper, checked incrementally
//! after every simulation step: election safety, leader append-only, log
//! matching, leader completeness and state machine safety; and for
//! witnesses, that they never campaign and never hold a command payload.

use super::Violation;
use crate::{Entry, LogIndex, Node, NodeId, Role, Storage, Term};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What the checker has seen so far.
#[derive(Debug, Default)]
pub(crate) struct Invariants {
    /// Election safety: the leader of each term.
    leaders: BTreeMap<Term, NodeId>,
    /// Log matching: every (index, term) ever written to a log, with its
    /// payload and the term of the entry before it. Equal payloads and
    /// predecessors at every pair imply, by induction, identical prefixes.
    /// The payload is unknown (`None`) while only witnesses wrote it.
    written: HashMap<(LogIndex, Term), (Option<Bytes>, Term)>,
    /// Entries known committed, by index - 1: the entry's term, payload,
    /// and the term of the leader that committed it.
    committed: Vec<(Term, Bytes, Term)>,
    /// Leader append-only: per node, the term it leads and the length of
    /// its log when last seen.
    leading: BTreeMap<NodeId, (Term, LogIndex)>,
    /// Nodes made witnesses (ids are never reused).
    witnesses: BTreeSet<NodeId>,
}

impl Invariants {
    /// A node handed out `entries` to persist: log matching, and leaders
    /// never overwrite.
    pub(crate) fn appended<S: Storage>(
        &mut self,
        node: &Node<S>,
        entries: &[Entry],
    ) -> Result<(), Violation> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let id = node.id();
        let overwrites = self.leading.get(&id).is_some_and(|(term, last)| {
            node.role() == Role::Leader && *term == node.term() && first.index <= *last
        });
        if overwrites {
            return Err(Violation::LeaderAppendOnly {
                node: id,
                term: node.term(),
                index: first.index,
            });
        }
        let mut prev_term = node
            .log_term(first.index.prev())
            .map_err(|error| Violation::Node { node: id, error })?
            .unwrap_or_default();
        let witness = self.witnesses.contains(&id);
        for e in entries {
            // A witness's entries carry no command, so their payload is
            // unknown unless it is a configuration.
            let stripped = witness && e.configuration().is_none();
            if stripped && !e.data.is_empty() {
                return Err(Violation::WitnessPayload {
                    node: id,
                    index: e.index,
                });
            }
            let data = (!stripped).then(|| e.data.clone());
            let seen = self
                .written
                .entry((e.index, e.term))
                .or_insert_with(|| (data.clone(), prev_term));
            if seen.0.is_none() {
                seen.0.clone_from(&data);
            }
            let differs = data.is_some() && seen.0 != data;
            if differs || seen.1 != prev_term {
                return Err(Violation::LogMatching {
                    node: id,
                    index: e.index,
                    term: e.term,
                });
            }
            prev_term = e.term;
        }
        Ok(())
    }

    /// Checks a running node's role and commit index after a step.
    pub(crate) fn observe<S: Storage>(&mut self, node: &Node<S>) -> Result<(), Violation> {
        let id = node.id();
        if self.witnesses.contains(&id) && node.role() != Role::Follower {
            return Err(Violation::WitnessCampaigned {
                node: id,
                term: node.term(),
            });
        }
        if node.role() != Role::Leader {
            self.leading.remove(&id);
            return Ok(());
        }
        let term = node.term();
        let leader = *self.leaders.entry(term).or_insert(id);
        if leader != id {
            return Err(Violation::ElectionSafety {
                term,
                first: leader,
                second: id,
            });
        }
        let last = node.last_index();
        match self.leading.get(&id) {
            Some((t, seen)) if *t == term => {
                if last < *seen {
                    return Err(Violation::LeaderAppendOnly {
                        node: id,
                        term,
                        index: last,
                    });
                }
            }
            _ => self.new_leader(node)?,
        }
        self.leading.insert(id, (term, last));
        self.record_commits(node)
    }

    /// Leader completeness: a new leader of term T holds every entry
    /// committed in a term before T.
    fn new_leader<S: Storage>(&self, node: &Node<S>) -> Result<(), Violation> {
        let term = node.term();
        for (i, (entry_term, _, committed_in)) in self.committed.iter().enumerate() {
            if *committed_in >= term {
                continue;
            }
            let index = LogIndex(i as u64 + 1);
            let held = match node.log_term(index) {
                // Compacted into the leader's snapshot, which holds only
                // entries it applied (checked by `applied`).
                Err(crate::Error::Storage(crate::StorageError::Compacted { .. })) => continue,
                other => other.map_err(|error| Violation::Node {
                    node: node.id(),
                    error,
                })?,
            };
            if held != Some(*entry_term) {
                return Err(Violation::LeaderCompleteness {
                    leader: node.id(),
                    term,
                    index,
                });
            }
        }
        Ok(())
    }

    fn record_commits<S: Storage>(&mut self, leader: &Node<S>) -> Result<(), Violation> {
        let commit = leader.commit_index();
        let known = LogIndex(self.committed.len() as u64);
        if commit <= known {
            return Ok(());
        }
        let mut entries = Vec::new();
        leader
            .log_entries(known.next(), &mut entries)
            .map_err(|error| Violation::Node {
                node: leader.id(),
                error,
            })?;
        // The leader's log may start after `known` if it compacted entries
        // it applied, which `applied` recorded already.
        for e in entries.into_iter().take_while(|e| e.index <= commit) {
            if e.index.0 == self.committed.len() as u64 + 1 {
                self.committed.push((e.term, e.data, leader.term()));
            }
        }
        Ok(())
    }

    /// State machine safety: whatever any node applies at an index, every
    /// node applies there, and it is what the leaders committed.
    pub(crate) fn applied(&mut self, node: NodeId, entry: &Entry) -> Result<(), Violation> {
        let i = (entry.index.0 - 1) as usize;
        if self.witnesses.contains(&node) && entry.configuration().is_none() {
            // A witness applies positions, not commands: the term must
            // match what was committed there, and there is no payload.
            let wrong_term = self
                .committed
                .get(i)
                .is_some_and(|(t, ..)| *t != entry.term);
            if wrong_term {
                return Err(Violation::StateMachineSafety {
                    node,
                    index: entry.index,
                });
            }
            if !entry.data.is_empty() {
                return Err(Violation::WitnessPayload {
                    node,
                    index: entry.index,
                });
            }
            return Ok(());
        }
        match self.committed.get(i) {
            Some((term, data, _)) => {
                if *term != entry.term || *data != entry.data {
                    return Err(Violation::StateMachineSafety {
                        node,
                        index: entry.index,
                    });
                }
            }
            // Applied before any leader was seen committing it (the leader
            // crashed in the same step): it becomes the reference.
            None if i == self.committed.len() => {
                self.committed
                    .push((entry.term, entry.data.clone(), entry.term));
            }
            None => {
                return Err(Violation::StateMachineSafety {
                    node,
                    index: entry.index,
                });
            }
        }
        Ok(())
    }

    /// Records that `node` is a witness from now on.
    pub(crate) fn witness(&mut self, node: NodeId) {
        self.witnesses.insert(node);
    }

    /// Whether `node` was made a witness.
    pub(crate) fn is_witness(&self, node: NodeId) -> bool {
        self.witnesses.contains(&node)
    }

    /// Forgets per-node leadership state (the node crashed).
    pub(crate) fn crashed(&mut self, node: NodeId) {
        self.leading.remove(&node);
    }

    /// How many entries are known committed.
    pub(crate) fn committed_len(&self) -> u64 {
        self.committed.len() as u64
    }

    /// How many distinct leaders were elected.
    pub(crate) fn elections(&self) -> usize {
        self.leaders.len()
    }
}
