//! Follower side of log replication: accepting appends and snapshots and answering the leader.

use super::{IncomingSnapshot, Node};
use crate::error::{DropReason, Error};
use crate::message::{AppendOutcome, Message, MessageBody};
use crate::ready::Role;
use crate::storage::{Snapshot, SnapshotMeta, Storage};
use crate::types::{Entry, LogIndex, NodeId, Term};
use bytes::{Bytes, BytesMut};

impl<S: Storage> Node<S> {
    /// Accepts `from` as leader of the current term.
    pub(super) fn follow(&mut self, from: NodeId) -> Result<(), Error> {
        if self.role == Role::Leader {
            return Err(Error::Dropped(DropReason::Malformed {
                from,
                reason: "a second leader in this node's term",
            }));
        }
        if matches!(self.role, Role::Candidate | Role::PreCandidate) {
            self.become_follower(self.term, Some(from));
        }
        if_tracing! {
            if self.leader != Some(from) {
                tracing::info!(
                    target: "quorate_raft_core",
                    node = self.id.0,
                    term = self.term.0,
                    leader = from.0,
                    "following a new leader"
                );
            }
        }
        self.leader = Some(from);
        self.election_elapsed = 0;
        Ok(())
    }

    // ----- replication, follower side -----

    pub(super) fn handle_append(
        &mut self,
        from: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        mut entries: Vec<Entry>,
        leader_commit: LogIndex,
    ) -> Result<(), Error> {
        let committed = self.log.committed;
        if prev_log_index < committed {
            // Everything up to the commit index matches any leader's log
            // (§5.4.3); skip the part we already have.
            let skip = (committed.0 - prev_log_index.0) as usize;
            let Some(prev_term) = entries.get(skip - 1).map(|e| e.term) else {
                self.ack_append(from, committed);
                return Ok(());
            };
            entries.drain(..skip);
            return self.handle_append(from, committed, prev_term, entries, leader_commit);
        }
        if !self.log.matches(prev_log_index, prev_log_term)? {
            let outcome = self.conflict_hint(prev_log_index)?;
            self.reply_append(from, outcome);
            return Ok(());
        }
        let last_new = prev_log_index.plus(entries.len() as u64);
        // Skip entries we already have; replace from the first conflict.
        let mut first_new = entries.len();
        for (i, e) in entries.iter().enumerate() {
            if !self.log.matches(e.index, e.term)? {
                first_new = i;
                break;
            }
        }
        if let Some(first) = entries.get(first_new).map(|e| e.index) {
            if first <= committed {
                return Err(Error::Dropped(DropReason::ConflictWithCommitted {
                    from,
                    index: first,
                    committed,
                }));
            }
            entries.drain(..first_new);
            // Configurations of replaced entries revert; new ones take
            // effect on append (thesis §4.1). Read before the entries move
            // into the log.
            let known = self.configurations.len();
            self.configurations.retain(|(i, _)| *i < first);
            let kept = self.configurations.len();
            self.configurations.extend(
                entries
                    .iter()
                    .filter_map(|e| e.configuration().map(|c| (e.index, c))),
            );
            let reconfigured = kept != known || self.configurations.len() != kept;
            if let Some(replaced) = self.log.truncate_and_append(entries) {
                for f in &mut self.in_flight {
                    f.persists_to = f.persists_to.min(replaced.prev());
                }
                self.forget_acks_from(replaced);
            }
            if reconfigured {
                self.configuration_changed();
            }
        }
        self.log.commit_to(leader_commit.min(last_new));
        self.ack_append(from, last_new);
        Ok(())
    }

    /// A chunk of the leader's snapshot (thesis figure 5.3). Chunks must
    /// arrive in order; otherwise the answer tells the leader where to
    /// resume. The last chunk either confirms a log we already hold or
    /// replaces the log, and is acknowledged once that is durable.
    pub(super) fn handle_install_snapshot(
        &mut self,
        from: NodeId,
        term: Term,
        meta: SnapshotMeta,
        offset: u64,
        data: &Bytes,
        done: bool,
    ) -> Result<(), Error> {
        let committed = self.log.committed;
        if meta.index <= committed {
            // We already hold (and may have applied) all of it.
            self.incoming_snapshot = None;
            self.reply_append(
                from,
                AppendOutcome::Success {
                    match_index: committed,
                },
            );
            return Ok(());
        }
        let same = |i: &IncomingSnapshot| i.term == term && i.from == from && i.meta == meta;
        if !self.incoming_snapshot.as_ref().is_some_and(same) {
            if offset != 0 {
                self.snapshot_received(from, meta.index, 0);
                return Ok(());
            }
            self.incoming_snapshot = Some(IncomingSnapshot {
                term,
                from,
                meta: meta.clone(),
                data: BytesMut::new(),
            });
        }
        let Some(incoming) = self.incoming_snapshot.as_mut() else {
            return Ok(());
        };
        let received = incoming.data.len() as u64;
        if offset != received {
            self.snapshot_received(from, meta.index, received);
            return Ok(());
        }
        let size = received.saturating_add(data.len() as u64);
        let limit = self.config.max_snapshot_bytes;
        if size > limit {
            trace_event!(
                warn,
                node = self.id.0,
                peer = from.0,
                size,
                limit,
                "snapshot over max_snapshot_bytes dropped"
            );
            self.incoming_snapshot = None;
            return Err(Error::Dropped(DropReason::SnapshotTooLarge {
                from,
                size,
                limit,
            }));
        }
        incoming.data.extend_from_slice(data);
        if !done {
            let received = incoming.data.len() as u64;
            self.snapshot_received(from, meta.index, received);
            return Ok(());
        }
        let Some(incoming) = self.incoming_snapshot.take() else {
            return Ok(());
        };
        trace_event!(
            debug,
            node = self.id.0,
            term = self.term.0,
            peer = from.0,
            index = meta.index.0,
            bytes = incoming.data.len(),
            "snapshot received"
        );
        if self.log.matches(meta.index, meta.term)? {
            // Our log already holds the snapshot's last entry, so it holds
            // everything before it: keep the log, entries after it included.
            self.log.commit_to(meta.index);
        } else {
            self.log.restore(meta.clone());
            self.base_configuration = (meta.index, meta.configuration.clone());
            self.configurations.clear();
            self.configuration_changed();
            for f in &mut self.in_flight {
                f.persists_to = f.persists_to.min(meta.index);
            }
            self.forget_acks_from(meta.index.next());
            self.restored = Some(Box::new(Snapshot {
                meta: meta.clone(),
                data: incoming.data.freeze(),
            }));
        }
        self.reply_append(
            from,
            AppendOutcome::Success {
                match_index: meta.index,
            },
        );
        Ok(())
    }

    /// The repair hint for a rejected `prev_log_index`: the term we hold
    /// there and the first index of that term, so the leader can skip it.
    pub(super) fn conflict_hint(&self, rejected_index: LogIndex) -> Result<AppendOutcome, Error> {
        let Some(term) = self.log.term(rejected_index)? else {
            return Ok(AppendOutcome::Conflict {
                rejected_index,
                conflict_term: None,
                first_index: self.log.last_index().next(),
            });
        };
        let mut first = rejected_index;
        while first.prev() > self.log.committed && self.log.term(first.prev())? == Some(term) {
            first = first.prev();
        }
        Ok(AppendOutcome::Conflict {
            rejected_index,
            conflict_term: Some(term),
            first_index: first,
        })
    }

    pub(super) fn reply_append(&mut self, to: NodeId, outcome: AppendOutcome) {
        self.reply(to, MessageBody::AppendEntriesResponse { outcome });
    }

    /// Acknowledges entries that match the leader's log up to
    /// `match_index`: as durable once the Ready persisting them is
    /// advanced, and (with [`Config::early_append_ack`]) at once as
    /// received, which asserts nothing about durability (thesis §10.2.1).
    pub(super) fn ack_append(&mut self, to: NodeId, match_index: LogIndex) {
        if self.config.early_append_ack {
            let received = AppendOutcome::Received { match_index };
            self.send(to, MessageBody::AppendEntriesResponse { outcome: received });
        }
        self.reply_append(to, AppendOutcome::Success { match_index });
    }

    /// The log from `index` on was replaced (by a newer leader's entries or
    /// a snapshot) before being acknowledged: durable acknowledgments still
    /// held for it would claim entries this node no longer has, to a leader
    /// that has been superseded, so they are dropped.
    pub(super) fn forget_acks_from(&mut self, index: LogIndex) {
        let stale = |m: &Message| {
            matches!(
                m.body,
                MessageBody::AppendEntriesResponse {
                    outcome: AppendOutcome::Success { match_index }
                } if match_index >= index
            )
        };
        self.held.retain(|m| !stale(m));
        for f in &mut self.in_flight {
            f.held.retain(|m| !stale(m));
        }
    }
}
