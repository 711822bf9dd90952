//! Leader side of log replication: appends, snapshots, heartbeats, acks and the commit index.

use super::{Node, SnapshotStatus};
use crate::error::Error;
use crate::message::{AppendOutcome, Message, MessageBody};
use crate::progress::{Progress, ProgressState};
use crate::ready::Role;
use crate::storage::Storage;
use crate::types::{Entry, LogIndex, NodeId, Term};
use bytes::Bytes;

impl<S: Storage> Node<S> {
    /// A leader sends a heartbeat round now, as if its heartbeat tick had
    /// fired (raft-rs `ping`); nothing on other roles. It does not count as
    /// a tick-driven beat for detecting lost appends.
    pub fn ping(&mut self) {
        if self.role == Role::Leader {
            self.broadcast_heartbeat(false);
        }
    }

    /// Tells a leader that a message to `id` could not be delivered (a
    /// failed connection, a full queue). Appends pipelined to it were
    /// probably lost: replication falls back to probing from its match
    /// index (etcd-raft `ReportUnreachable`). Ignored on other roles and
    /// for ids this leader does not replicate to, so a transport may call
    /// it on every failed send.
    pub fn report_unreachable(&mut self, id: NodeId) {
        if self.role != Role::Leader {
            return;
        }
        if let Some(p) = self.progress_mut(id)
            && p.state == ProgressState::Replicate
        {
            p.state = ProgressState::Probe;
            p.inflight.clear();
            p.paused = false;
            p.next_index = p.match_index.next();
        }
    }

    /// Tells a leader how sending its snapshot to `id` ended, when the
    /// transport knows (etcd-raft `ReportSnapshot`).
    /// [`SnapshotStatus::Failed`] abandons the transfer: it restarts from
    /// its first byte once `id` answers a heartbeat.
    /// [`SnapshotStatus::Finished`] stops sending chunks and waits for
    /// `id`'s acknowledgment (or a heartbeat answer, then probes after the
    /// snapshot). Ignored unless this leader is sending `id` a snapshot.
    pub fn report_snapshot(&mut self, id: NodeId, status: SnapshotStatus) {
        if self.role != Role::Leader {
            return;
        }
        let Some(p) = self.progress_mut(id) else {
            return;
        };
        if p.state != ProgressState::Snapshot {
            return;
        }
        p.state = ProgressState::Probe;
        p.inflight.clear();
        p.paused = true;
        p.next_index = match status {
            SnapshotStatus::Failed => p.match_index.next(),
            SnapshotStatus::Finished => p.snapshot_index.next().max(p.match_index.next()),
        };
        p.snapshot_offset = 0;
    }

    pub(super) fn snapshot_received(&mut self, to: NodeId, index: LogIndex, received: u64) {
        self.send(to, MessageBody::InstallSnapshotResponse { index, received });
    }

    // ----- replication, leader side -----

    pub(super) fn handle_append_response(
        &mut self,
        from: NodeId,
        outcome: AppendOutcome,
    ) -> Result<(), Error> {
        if self.role != Role::Leader {
            return Ok(());
        }
        match outcome {
            AppendOutcome::Success { match_index } => {
                // validate() refused indices beyond the leader's log.
                let moved = match self.progress_mut(from) {
                    Some(p) => p.acknowledge(match_index),
                    None => false,
                };
                if moved {
                    // A match at or below the commit index cannot raise
                    // it: only values above it decide the next one.
                    if match_index > self.log.committed {
                        self.maybe_commit()?;
                    }
                    self.maybe_send_timeout_now(from);
                    if self.catching_up.iter().any(|c| c.id == from) {
                        self.advance_catch_ups();
                    }
                }
            }
            AppendOutcome::Received { match_index } => {
                // Not durable yet: replicate further, but do not count it.
                if let Some(p) = self.progress_mut(from) {
                    p.received(match_index);
                }
            }
            AppendOutcome::Conflict {
                rejected_index,
                conflict_term,
                first_index,
            } => {
                let hint = match conflict_term {
                    Some(term) => self
                        .last_index_of_term(term, rejected_index)?
                        .map_or(first_index, LogIndex::next),
                    None => first_index,
                };
                if let Some(p) = self.progress_mut(from) {
                    p.reject(rejected_index, hint);
                }
            }
        }
        Ok(())
    }

    /// The last index at or before `at` holding an entry of `term`.
    pub(super) fn last_index_of_term(
        &self,
        term: Term,
        at: LogIndex,
    ) -> Result<Option<LogIndex>, Error> {
        let mut i = at.min(self.log.last_index());
        let snapshot = self.log.first_index()?.prev();
        while i > LogIndex::ZERO && i >= snapshot {
            match self.log.term(i)? {
                Some(t) if t == term => return Ok(Some(i)),
                Some(t) if t < term => return Ok(None),
                _ => i = i.prev(),
            }
        }
        Ok(None)
    }

    pub(super) fn maybe_commit(&mut self) -> Result<(), Error> {
        let id = self.id;
        let persisted = self.log.persisted();
        let progress = &self.progress;
        let candidate = self.configuration.committed_by_majority(|v| {
            if v == id {
                persisted
            } else {
                progress
                    .iter()
                    .find(|p| p.id == v)
                    .map_or(LogIndex::ZERO, |p| p.match_index)
            }
        });
        // Only entries of the current term commit by counting (§5.4.2).
        if candidate > self.log.committed && self.log.term(candidate)? == Some(self.term) {
            if_tracing! {
                let index = self.configuration_index();
                if index > self.log.committed && index <= candidate {
                    tracing::info!(
                        target: "quorate_raft_core",
                        node = self.id.0,
                        term = self.term.0,
                        index = index.0,
                        voters = ?self.configuration.voters(),
                        learners = ?self.configuration.learners(),
                        witnesses = ?self.configuration.witnesses(),
                        joint = self.configuration.is_joint(),
                        "configuration change committed"
                    );
                }
            }
            self.log.commit_to(candidate);
            while let Some(&(index, size)) = self.uncommitted.front() {
                if index > candidate {
                    break;
                }
                self.uncommitted.pop_front();
                self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(size);
            }
            self.after_commit();
        }
        Ok(())
    }

    /// Sends every follower what it is missing, as far as flow control
    /// allows, and tells followers about a new commit index.
    pub(super) fn replicate(&mut self) -> Result<(), Error> {
        let mut progress = std::mem::take(&mut self.progress);
        let result = progress.iter_mut().try_for_each(|p| self.replicate_to(p));
        self.progress = progress;
        result
    }

    pub(super) fn replicate_to(&mut self, p: &mut Progress) -> Result<(), Error> {
        if p.state == ProgressState::Snapshot || p.next_index < self.log.first_index()? {
            return self.send_snapshot_chunk(p);
        }
        let last = self.log.last_index();
        let committed = self.log.committed;
        while p.can_send(self.config.max_inflight_msgs)
            && (p.next_index <= last || p.sent_commit < committed)
        {
            let prev_log_index = p.next_index.prev();
            let Some(prev_log_term) = self.log.term(prev_log_index)? else {
                // Beyond our log (a stale probe position): restart the probe.
                p.next_index = p.match_index.next();
                p.state = ProgressState::Probe;
                continue;
            };
            let mut entries = Vec::new();
            if self.configuration.is_witness(p.id) {
                self.witness_entries(p.next_index, &mut entries)?;
            } else {
                self.log
                    .entries_from(p.next_index, self.config.max_size_per_msg, &mut entries)?;
            }
            p.sent(entries.last().map(|e| e.index));
            p.sent_commit = committed;
            self.outbox.push(Message {
                from: self.id,
                to: p.id,
                term: self.term,
                body: MessageBody::AppendEntries {
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit: committed,
                },
            });
            if p.state == ProgressState::Probe {
                break;
            }
            if_tracing! {
                if !p.can_send(self.config.max_inflight_msgs) {
                    tracing::debug!(
                        target: "quorate_raft_core",
                        node = self.id.0,
                        term = self.term.0,
                        peer = p.id.0,
                        next_index = p.next_index.0,
                        match_index = p.match_index.0,
                        "in-flight window full: replication to the peer paused until it acknowledges"
                    );
                }
            }
        }
        Ok(())
    }

    /// The entries from `low` as a witness receives them, built from log
    /// positions alone: each entry's term with an empty payload, except
    /// configuration entries, which go whole. The leader reads no payload,
    /// and the message size budget counts what is sent (16 bytes a
    /// stripped entry), so a witness catches up in few messages.
    pub(super) fn witness_entries(&self, low: LogIndex, out: &mut Vec<Entry>) -> Result<(), Error> {
        let last = self.log.last_index();
        let mut size = 0u64;
        let mut index = low;
        while index <= last {
            let is_configuration = self
                .configurations
                .binary_search_by_key(&index, |(i, _)| *i)
                .is_ok();
            let entry = if is_configuration {
                let mut one = Vec::new();
                self.log.entries_from(index, 0, &mut one)?;
                one.truncate(1);
                match one.pop() {
                    Some(entry) => entry,
                    None => break,
                }
            } else {
                let Some(term) = self.log.term(index)? else {
                    break;
                };
                Entry {
                    term,
                    index,
                    data: Bytes::new(),
                }
            };
            size += entry.size();
            if size > self.config.max_size_per_msg && !out.is_empty() {
                break;
            }
            out.push(entry);
            index = index.next();
        }
        Ok(())
    }

    /// Sends the next chunk of the latest snapshot to a follower that needs
    /// compacted entries; restarts the transfer if the snapshot changed.
    pub(super) fn send_snapshot_chunk(&mut self, p: &mut Progress) -> Result<(), Error> {
        let mut snapshot = self.log.storage.snapshot()?;
        if self.configuration.is_witness(p.id) {
            crate::witness::snapshot_metadata_only(&mut snapshot);
        }
        let index = snapshot.meta.index;
        let len = snapshot.data.len() as u64;
        if p.state != ProgressState::Snapshot || p.snapshot_index != index {
            trace_event!(
                info,
                node = self.id.0,
                term = self.term.0,
                peer = p.id.0,
                index = index.0,
                bytes = len,
                "snapshot send started"
            );
            p.send_snapshot(index, len);
        }
        if !p.can_send(self.config.max_inflight_msgs) {
            return Ok(());
        }
        let start = p.snapshot_offset.min(len);
        let end = start
            .saturating_add(self.config.max_snapshot_chunk_bytes)
            .min(len);
        let data = snapshot.data.slice(start as usize..end as usize);
        p.sent(None);
        self.outbox.push(Message {
            from: self.id,
            to: p.id,
            term: self.term,
            body: MessageBody::InstallSnapshot {
                meta: Box::new(snapshot.meta),
                offset: start,
                data,
                done: end == len,
            },
        });
        Ok(())
    }

    /// One heartbeat round to every follower; `quiesce` marks it as the
    /// last before the leader goes quiet.
    pub(super) fn broadcast_heartbeat(&mut self, quiesce: bool) {
        let committed = self.log.committed;
        let beats: Vec<(NodeId, LogIndex)> = self
            .progress
            .iter()
            .map(|p| (p.id, p.match_index.min(committed)))
            .collect();
        self.read_round += 1;
        let round = self.read_round;
        self.round_sent.push_back((round, self.ticks));
        if self.round_sent.len() > 64 {
            self.round_sent.pop_front();
        }
        for (to, commit) in beats {
            self.send(
                to,
                MessageBody::Heartbeat {
                    commit,
                    round,
                    quiesce,
                },
            );
        }
    }
}
