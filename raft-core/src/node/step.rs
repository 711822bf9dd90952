//! Message intake: validation of every incoming message, then dispatch by role and body.

use super::{MAX_POSITION, Node, StepOutcome};
use crate::error::{DropReason, Error, FatalError, StorageError};
use crate::message::{AppendOutcome, Message, MessageBody};
use crate::progress::ProgressState;
use crate::ready::Role;
use crate::storage::Storage;
use crate::types::{LogIndex, Term};

impl<S: Storage> Node<S> {
    /// Handles a message from a peer. Messages the node drops (malformed,
    /// misaddressed, from a non-member, stale or unexpected) change nothing
    /// and come back as [`StepOutcome::Dropped`] with the reason, so
    /// `node.step(m)?` in an event loop survives stray packets: the only
    /// error is a [`FatalError`] (the storage failed), which should stop
    /// the node.
    pub fn step(&mut self, m: Message) -> Result<StepOutcome, FatalError> {
        match self.step_inner(m) {
            Ok(outcome) => Ok(outcome),
            Err(Error::Dropped(reason)) => Ok(StepOutcome::Dropped(reason)),
            Err(e) => Err(FatalError::from_step(e)),
        }
    }

    pub(super) fn step_inner(&mut self, m: Message) -> Result<StepOutcome, Error> {
        let validated = self.validate(&m);
        if_tracing! {
            if let Err(e) = &validated {
                // The reason itself, not its wrapping as an error.
                let e: &dyn std::fmt::Display = match e {
                    Error::Dropped(reason) => reason,
                    other => other,
                };
                tracing::debug!(
                    target: "quorate_raft_core",
                    node = self.id.0,
                    term = self.term.0,
                    peer = m.from.0,
                    msg_term = m.term.0,
                    kind = m.body.kind(),
                    error = %e,
                    "message refused"
                );
            }
        }
        validated?;
        trace_event!(
            trace,
            node = self.id.0,
            term = self.term.0,
            peer = m.from.0,
            msg_term = m.term.0,
            kind = m.body.kind(),
            "message received"
        );
        let leader_hears_follower = self.role == Role::Leader && m.term == self.term;
        if let Some(p) = self.progress_mut(m.from).filter(|_| leader_hears_follower) {
            p.recent_active = true;
        }
        if m.term > self.term {
            match m.body {
                // Pre-votes never move terms: a granted answer carries the
                // term the pre-candidate would use.
                MessageBody::PreVote { .. } => {}
                MessageBody::PreVoteResponse { granted: true } => {}
                // A node that hears from its leader ignores elections
                // (check-quorum lease, thesis §4.2.3), and always those
                // of servers that are not voters of C_new: a server being
                // removed cannot disrupt the new configuration.
                MessageBody::RequestVote {
                    leadership_transfer: false,
                    ..
                } if self.in_lease()
                    || (self.heard_from_leader()
                        && !self.configuration.voters().contains(&m.from)) =>
                {
                    trace_event!(
                        debug,
                        node = self.id.0,
                        term = self.term.0,
                        peer = m.from.0,
                        msg_term = m.term.0,
                        why = if self.in_lease() {
                            "leader lease (check-quorum)"
                        } else {
                            "candidate not a voter of the new configuration"
                        },
                        "vote request ignored"
                    );
                    return Ok(StepOutcome::Dropped(DropReason::VoteIgnored {
                        from: m.from,
                    }));
                }
                MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. } => {
                    if_tracing! { self.trace_higher_term(&m); }
                    self.become_follower(m.term, Some(m.from));
                }
                _ => {
                    if_tracing! { self.trace_higher_term(&m); }
                    self.become_follower(m.term, None);
                }
            }
        } else if m.term < self.term {
            // Tell a stale leader or candidate about the newer term; drop
            // stale replies.
            trace_event!(
                debug,
                node = self.id.0,
                term = self.term.0,
                peer = m.from.0,
                msg_term = m.term.0,
                kind = m.body.kind(),
                "message refused: stale term"
            );
            match m.body {
                MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. } => {
                    self.reply(m.from, MessageBody::HeartbeatResponse { round: 0 });
                }
                MessageBody::RequestVote { .. } => {
                    self.reply(m.from, MessageBody::RequestVoteResponse { granted: false });
                }
                MessageBody::PreVote { .. } => {
                    self.send(m.from, MessageBody::PreVoteResponse { granted: false });
                }
                _ => {}
            }
            return Ok(StepOutcome::Dropped(DropReason::StaleTerm {
                from: m.from,
                kind: m.body.kind(),
                term: m.term,
                current: self.term,
            }));
        }
        if let Some(why) = self.unexpected(&m) {
            trace_event!(
                debug,
                node = self.id.0,
                term = self.term.0,
                peer = m.from.0,
                kind = m.body.kind(),
                why,
                "message ignored: unexpected"
            );
            return Ok(StepOutcome::Dropped(DropReason::Unexpected {
                from: m.from,
                kind: m.body.kind(),
                why,
            }));
        }
        // Every message of the group but a heartbeat answer needs this
        // node awake: a quiet leader's followers answer its last beat.
        if !matches!(m.body, MessageBody::HeartbeatResponse { .. }) {
            self.wake();
        }
        self.handle(m)?;
        Ok(StepOutcome::Handled)
    }

    /// Handles a well-formed message of the current term.
    pub(super) fn handle(&mut self, m: Message) -> Result<(), Error> {
        match m.body {
            MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                ..
            } => self.handle_request_vote(m.from, last_log_index, last_log_term),
            MessageBody::ForwardedProposal { commands } => {
                // `unexpected` dropped it unless this node leads and is
                // not transferring; the caps may still refuse commands.
                let total = commands.len();
                for (i, data) in commands.into_iter().enumerate() {
                    if self.propose(data).is_err() {
                        return Err(Error::Dropped(DropReason::ForwardedRefused {
                            from: m.from,
                            refused: total - i,
                        }));
                    }
                }
                Ok(())
            }
            MessageBody::TimeoutNow => {
                // Only our leader may hand over; skip pre-vote, we know the
                // leader stepped aside for us.
                if self.leader == Some(m.from) && self.can_campaign() {
                    let term = self.term.next();
                    trace_event!(
                        info,
                        node = self.id.0,
                        term = term.0,
                        peer = m.from.0,
                        pre_vote = false,
                        why = "leadership transfer",
                        "campaign started"
                    );
                    self.become_candidate(term);
                    self.request_votes(false, true);
                }
                Ok(())
            }
            MessageBody::RequestVoteResponse { granted } => {
                if self.role == Role::Candidate {
                    self.handle_vote_response(m.from, granted);
                }
                Ok(())
            }
            MessageBody::PreVote {
                last_log_index,
                last_log_term,
            } => {
                self.handle_pre_vote(m.from, m.term, last_log_index, last_log_term);
                Ok(())
            }
            MessageBody::PreVoteResponse { granted } => {
                // Grants carry our next term, refusals our current one.
                let current = if granted { self.term.next() } else { self.term };
                if self.role == Role::PreCandidate && m.term == current {
                    self.handle_vote_response(m.from, granted);
                }
                Ok(())
            }
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => {
                self.follow(m.from)?;
                self.handle_append(
                    m.from,
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                )
            }
            MessageBody::InstallSnapshot {
                meta,
                offset,
                data,
                done,
            } => {
                self.follow(m.from)?;
                self.handle_install_snapshot(m.from, m.term, *meta, offset, &data, done)
            }
            MessageBody::InstallSnapshotResponse { index, received } => {
                if self.role == Role::Leader
                    && let Some(p) = self.progress_mut(m.from)
                {
                    p.snapshot_received(index, received);
                }
                Ok(())
            }
            MessageBody::Heartbeat {
                commit,
                round,
                quiesce,
            } => {
                self.follow(m.from)?;
                self.log.commit_to(commit);
                self.reply(m.from, MessageBody::HeartbeatResponse { round });
                if quiesce {
                    self.follower_quiesce(m.from);
                }
                Ok(())
            }
            MessageBody::AppendEntriesResponse { outcome } => {
                self.handle_append_response(m.from, outcome)
            }
            MessageBody::HeartbeatResponse { round } => {
                if let Some(p) = self.progress_mut(m.from) {
                    p.heartbeat_answered();
                    p.acked_round = p.acked_round.max(round);
                }
                self.confirm_reads();
                self.renew_lease();
                Ok(())
            }
        }
    }

    /// A message with a newer term moves this node to it.
    #[cfg(feature = "tracing")]
    pub(super) fn trace_higher_term(&self, m: &Message) {
        let (node, term, peer, msg_term) = (self.id.0, self.term.0, m.from.0, m.term.0);
        let kind = m.body.kind();
        if self.role == Role::Follower {
            tracing::info!(target: "quorate_raft_core", node, term = msg_term, old_term = term, peer, kind, "term advanced: higher term seen");
        } else if self.transferee == Some(m.from) {
            tracing::info!(target: "quorate_raft_core", node, term = msg_term, old_term = term, peer, kind, "leadership transfer finished: the transferee started its election");
        } else {
            tracing::info!(target: "quorate_raft_core", node, term = msg_term, old_term = term, peer, kind, role = ?self.role, why = "higher term seen", "stepped down");
        }
    }

    /// Why a well-formed message of the current term has nothing to do in
    /// this node's state, if so (`handle` would ignore it).
    pub(super) fn unexpected(&self, m: &Message) -> Option<&'static str> {
        let leader = self.role == Role::Leader;
        let why = match m.body {
            MessageBody::ForwardedProposal { .. } if !leader || self.transferee.is_some() => {
                "forwarded proposal while not the leader, or transferring leadership"
            }
            MessageBody::TimeoutNow if self.leader != Some(m.from) || !self.can_campaign() => {
                "TimeoutNow not from the leader, or this node cannot campaign"
            }
            MessageBody::RequestVoteResponse { .. } if self.role != Role::Candidate => {
                "vote response while not a candidate"
            }
            MessageBody::PreVoteResponse { granted }
                if self.role != Role::PreCandidate
                    || m.term != if granted { self.term.next() } else { self.term } =>
            {
                "pre-vote response while not a pre-candidate for that term"
            }
            MessageBody::AppendEntriesResponse { .. }
            | MessageBody::HeartbeatResponse { .. }
            | MessageBody::InstallSnapshotResponse { .. }
                if !leader || self.progress(m.from).is_none() =>
            {
                "response to a leader while not the leader, or from a non-follower"
            }
            _ => return None,
        };
        Some(why)
    }

    pub(super) fn validate(&self, m: &Message) -> Result<(), Error> {
        if m.to != self.id {
            return Err(Error::Dropped(DropReason::WrongRecipient {
                to: m.to,
                me: self.id,
            }));
        }
        // A leader's traffic is accepted from nodes we do not know yet (a
        // lagging node learns of new members from the log); anything else
        // from a non-member, such as a removed server's RequestVote, is
        // refused.
        let leader_traffic = matches!(
            m.body,
            MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
        );
        if m.from == self.id || !(leader_traffic || self.configuration.contains(m.from)) {
            return Err(Error::Dropped(DropReason::UnknownPeer { from: m.from }));
        }
        // Terms and indices this far out are unreachable by a real cluster;
        // accepting them would let later arithmetic (a new term, the next
        // entry's index) overflow, so they are refused as malformed.
        let out_of_range = match &m.body {
            MessageBody::AppendEntries {
                prev_log_index,
                entries,
                ..
            } => prev_log_index.0.saturating_add(entries.len() as u64) >= MAX_POSITION,
            MessageBody::InstallSnapshot { meta, .. } => meta.index.0 >= MAX_POSITION,
            _ => false,
        };
        if m.term.0 >= MAX_POSITION || out_of_range {
            return Err(Error::Dropped(DropReason::Malformed {
                from: m.from,
                reason: "term or log index beyond any reachable position",
            }));
        }
        if let MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            ..
        } = &m.body
        {
            let malformed = |reason| {
                Error::Dropped(DropReason::Malformed {
                    from: m.from,
                    reason,
                })
            };
            if *prev_log_term > m.term {
                return Err(malformed("previous entry from a future term"));
            }
            let mut term = *prev_log_term;
            for (i, e) in entries.iter().enumerate() {
                if e.index != prev_log_index.plus(i as u64 + 1) {
                    return Err(malformed("entries are not contiguous"));
                }
                if e.term < term || e.term > m.term {
                    return Err(malformed("entry terms out of order"));
                }
                term = e.term;
            }
            // Committed entries are never replaced (§5.4.3): a current
            // leader that asks for it is refused before anything changes.
            // (A stale leader's message is answered with our term instead.)
            let current = m.term >= self.term;
            for e in entries
                .iter()
                .take_while(|e| current && e.index <= self.log.committed)
            {
                let held = match self.log.term(e.index) {
                    // Compacted entries were committed, so they match.
                    Err(Error::Storage(StorageError::Compacted { .. })) => None,
                    other => other?,
                };
                if held.is_some_and(|t| t != e.term) {
                    return Err(Error::Dropped(DropReason::ConflictWithCommitted {
                        from: m.from,
                        index: e.index,
                        committed: self.log.committed,
                    }));
                }
            }
        }
        if let MessageBody::InstallSnapshot { meta, .. } = &m.body {
            let malformed = |reason| {
                Error::Dropped(DropReason::Malformed {
                    from: m.from,
                    reason,
                })
            };
            if meta.term > m.term
                || meta.term == Term(0)
                || meta.index == LogIndex::ZERO
                || meta.index == LogIndex(u64::MAX)
            {
                return Err(malformed("snapshot of an impossible log position"));
            }
        }
        self.validate_positions(m)?;
        if self.role == Role::Leader && m.term == self.term {
            self.validate_for_leader(m)?;
        }
        Ok(())
    }

    /// Positions no honest sender produces in any state: beyond
    /// [`MAX_POSITION`], or a candidate's last entry from a term after the
    /// election's.
    pub(super) fn validate_positions(&self, m: &Message) -> Result<(), Error> {
        let beyond = |i: &LogIndex| i.0 >= MAX_POSITION;
        let reason = match &m.body {
            MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                ..
            }
            | MessageBody::PreVote {
                last_log_index,
                last_log_term,
            } if beyond(last_log_index) || *last_log_term > m.term => {
                "candidate's last entry beyond its election"
            }
            MessageBody::AppendEntries { leader_commit, .. } if beyond(leader_commit) => {
                "commit index beyond any reachable position"
            }
            MessageBody::Heartbeat { commit, .. } if beyond(commit) => {
                "commit index beyond any reachable position"
            }
            MessageBody::InstallSnapshot { offset, .. } if *offset >= MAX_POSITION => {
                "snapshot offset beyond any reachable position"
            }
            MessageBody::ForwardedProposal { commands }
                if commands
                    .iter()
                    .any(|c| c.starts_with(crate::config::CONFIGURATION_TAG)) =>
            {
                "forwarded command carries the configuration tag"
            }
            _ => return Ok(()),
        };
        Err(Error::Dropped(DropReason::Malformed {
            from: m.from,
            reason,
        }))
    }

    /// Answers a leader can check against what it sent in its term: no
    /// acknowledgment beyond its log, no rejection of an append it never
    /// sent, no answer to a heartbeat round or snapshot bytes it never
    /// sent, and no second leader. Refused before anything changes.
    pub(super) fn validate_for_leader(&self, m: &Message) -> Result<(), Error> {
        let last = self.log.last_index();
        let reason = match &m.body {
            MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => "a second leader in this node's term",
            MessageBody::AppendEntriesResponse {
                outcome:
                    AppendOutcome::Success { match_index } | AppendOutcome::Received { match_index },
            } if *match_index > last => "acknowledged entries the leader does not have",
            MessageBody::AppendEntriesResponse {
                outcome:
                    AppendOutcome::Conflict {
                        rejected_index,
                        conflict_term,
                        first_index,
                    },
            } if *rejected_index > last
                || *rejected_index == LogIndex::ZERO
                || *first_index > *rejected_index
                || *first_index == LogIndex::ZERO
                || conflict_term.is_some_and(|t| t > m.term) =>
            {
                "rejection of an append the leader never sent"
            }
            MessageBody::HeartbeatResponse { round } if *round > self.read_round => {
                "answer to a heartbeat round not yet sent"
            }
            MessageBody::InstallSnapshotResponse { index, received } => {
                // Bounded by what this transfer sends, kept in the progress:
                // no storage read per acknowledgment.
                let too_long = self.progress(m.from).is_some_and(|p| {
                    p.state == ProgressState::Snapshot
                        && p.snapshot_index == *index
                        && *received > p.snapshot_len
                });
                if *index > last || too_long {
                    "snapshot bytes the leader never sent"
                } else {
                    return Ok(());
                }
            }
            _ => return Ok(()),
        };
        Err(Error::Dropped(DropReason::Malformed {
            from: m.from,
            reason,
        }))
    }
}
