//! Elections: ticks, (pre-)votes, role changes, check-quorum and leadership transfer.

use super::Node;
use crate::error::Error;
use crate::membership::Promotion;
use crate::message::{Message, MessageBody};
use crate::progress::Progress;
use crate::ready::Role;
use crate::storage::Storage;
use crate::types::{Entry, LogIndex, NodeId, Term};
use bytes::Bytes;

impl<S: Storage> Node<S> {
    // ----- inputs -----

    /// Advances logical time by one tick: followers and candidates count
    /// towards their election timeout, leaders towards the next heartbeat,
    /// check-quorum, the end of a leadership transfer and the catch-up
    /// deadlines. [`poll_timeout`](Node::poll_timeout) says which tick
    /// next does something; [`tick_by`](Node::tick_by) takes many ticks at
    /// once.
    pub fn tick(&mut self) {
        if self.quiesced {
            // Time passes (leases end), nothing acts.
            self.skip_quiet_ticks(1);
            return;
        }
        self.ticks = self.ticks.saturating_add(1);
        match self.role {
            Role::Leader => {
                self.heartbeat_elapsed += 1;
                if self.heartbeat_elapsed >= self.config.heartbeat_tick {
                    self.heartbeat_elapsed = 0;
                    // Only these beats measure how long appends go
                    // unanswered; ReadIndex rounds come at any rate.
                    self.progress.iter_mut().for_each(Progress::beat);
                    self.broadcast_heartbeat(false);
                }
                self.election_elapsed += 1;
                if self.election_elapsed >= self.config.election_tick {
                    self.election_elapsed = 0;
                    self.check_quorum();
                }
                if self.transferee.is_some() {
                    self.transfer_elapsed += 1;
                    if self.transfer_elapsed >= self.config.election_tick {
                        // The transferee did not take over in time: abandon.
                        trace_event!(
                            info,
                            node = self.id.0,
                            term = self.term.0,
                            peer = self.transferee.map(|t| t.0),
                            why = "transferee did not take over within an election timeout",
                            "leadership transfer aborted"
                        );
                        self.transferee = None;
                    }
                }
                self.advance_catch_ups();
            }
            Role::Follower | Role::PreCandidate | Role::Candidate => {
                // Saturating: a learner or witness never campaigns, and
                // may tick for longer than a u32 counts.
                self.election_elapsed = self.election_elapsed.saturating_add(1);
                if self.election_elapsed >= self.randomized_election_timeout && self.can_campaign()
                {
                    self.campaign();
                }
            }
        }
    }

    /// Starts an election now, as if the election timeout had fired: a
    /// pre-vote round first if [`Config::pre_vote`](crate::Config::pre_vote) is set. A leader
    /// ignores it (as etcd-raft and raft-rs do): it already leads, and a
    /// new election would leave the group leaderless for a while. Use
    /// [`transfer_leadership`](Node::transfer_leadership) to move
    /// leadership.
    pub fn campaign(&mut self) {
        if self.role == Role::Leader || !self.can_campaign() {
            return;
        }
        // Called from `tick` only once the timeout elapsed; earlier, the
        // application asked.
        trace_event!(
            info,
            node = self.id.0,
            term = self.term.next().0,
            pre_vote = self.config.pre_vote,
            why = if self.election_elapsed >= self.randomized_election_timeout {
                "election timeout"
            } else {
                "campaign requested"
            },
            "campaign started"
        );
        if self.config.pre_vote {
            self.become_pre_candidate();
            self.request_votes(true, false);
            // Alone, our own pre-vote is a quorum.
            self.tally_votes();
        } else {
            let term = self.term.next();
            self.become_candidate(term);
            self.request_votes(false, false);
        }
    }

    /// Voters campaign; not while restoring a snapshot, since a leader
    /// replicates from storage, which holds the old log until then. Never
    /// witnesses: they hold no payloads to replicate.
    pub(super) fn can_campaign(&self) -> bool {
        self.configuration.is_voter(self.id)
            && !self.configuration.is_witness(self.id)
            && !self.log.is_restoring()
    }

    pub(super) fn request_votes(&mut self, pre_vote: bool, transfer: bool) {
        let last_log_index = self.log.last_index();
        let last_log_term = self.log.last_term();
        // A pre-vote asks about the term the election would use, without
        // moving to it (thesis §9.6).
        let term = if pre_vote {
            self.term.next()
        } else {
            self.term
        };
        let peers: Vec<NodeId> = self
            .configuration
            .all_voters()
            .filter(|v| *v != self.id)
            .collect();
        for to in peers {
            let body = if pre_vote {
                MessageBody::PreVote {
                    last_log_index,
                    last_log_term,
                }
            } else {
                MessageBody::RequestVote {
                    last_log_index,
                    last_log_term,
                    leadership_transfer: transfer,
                }
            };
            self.outbox.push(Message {
                from: self.id,
                to,
                term,
                body,
            });
        }
    }

    /// Hands leadership to voter `to` (thesis §3.10): proposals are refused
    /// meanwhile, `to` is brought up to date, then told to start an election
    /// at once (TimeoutNow), which it wins with the most up-to-date log.
    /// Abandoned if `to` has not taken over within an election timeout
    /// (as in etcd-raft), or at once by [`abort_transfer`](Node::abort_transfer).
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), Error> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader_hint: self.leader,
            });
        }
        if to == self.id
            || !self.configuration.voters().contains(&to)
            || !self.configuration.is_voter(self.id)
        {
            return Err(Error::NotAVoter { id: to });
        }
        if self.configuration.is_witness(to) {
            return Err(Error::WitnessCannotLead { id: to });
        }
        trace_event!(
            info,
            node = self.id.0,
            term = self.term.0,
            peer = to.0,
            "leadership transfer started"
        );
        self.wake();
        self.transferee = Some(to);
        self.transfer_elapsed = 0;
        self.maybe_send_timeout_now(to);
        Ok(())
    }

    /// The leadership transfer in progress, if any.
    pub fn transferee(&self) -> Option<NodeId> {
        self.transferee
    }

    /// Abandons the leadership transfer in progress, if any, and returns
    /// its transferee: proposals are accepted again at once. A TimeoutNow
    /// already sent may still make the transferee start an election, so
    /// lease reads stay off for the rest of the term.
    pub fn abort_transfer(&mut self) -> Option<NodeId> {
        let to = self.transferee.take()?;
        trace_event!(
            info,
            node = self.id.0,
            term = self.term.0,
            peer = to.0,
            why = "aborted by the application",
            "leadership transfer aborted"
        );
        Some(to)
    }

    // ----- controls for tests and transports -----

    /// The election timeout in force, in ticks, in `[election_tick, 2 *
    /// election_tick)`: drawn at start and again whenever this node starts
    /// a campaign.
    pub fn randomized_election_timeout(&self) -> u32 {
        self.randomized_election_timeout
    }

    /// Sets the election timeout until the next one is drawn (when this
    /// node next campaigns), to make a test deterministic without searching
    /// for a seed. It must lie in `[election_tick, 2 * election_tick)`, the
    /// range the lease and check-quorum arguments assume; otherwise
    /// [`Error::ElectionTimeoutOutOfRange`].
    pub fn set_randomized_election_timeout(&mut self, ticks: u32) -> Result<(), Error> {
        let min = self.config.election_tick;
        let max = min.saturating_mul(2);
        if ticks < min || ticks >= max {
            return Err(Error::ElectionTimeoutOutOfRange { ticks, min, max });
        }
        self.randomized_election_timeout = ticks;
        Ok(())
    }

    /// Ticks since this node last heard from a leader or granted a vote
    /// (follower), or since its last check-quorum interval began (leader).
    pub fn election_elapsed(&self) -> u32 {
        self.election_elapsed
    }

    pub(super) fn maybe_send_timeout_now(&mut self, to: NodeId) {
        let last = self.log.last_index();
        let caught_up = self.progress(to).is_some_and(|p| p.match_index == last);
        if self.transferee == Some(to) && caught_up {
            trace_event!(
                info,
                node = self.id.0,
                term = self.term.0,
                peer = to.0,
                index = last.0,
                "leadership transfer: transferee caught up, TimeoutNow sent"
            );
            self.lease_forfeited = true;
            self.send(to, MessageBody::TimeoutNow);
        }
    }

    pub(super) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let base = self.config.election_tick;
        self.randomized_election_timeout = self.rng.u32(base..base.saturating_mul(2));
    }

    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if_tracing! {
            if let Some(l) = leader.filter(|l| self.leader != Some(*l)) {
                tracing::info!(
                    target: "quorate_raft_core",
                    node = self.id.0,
                    term = term.0,
                    leader = l.0,
                    "following a new leader"
                );
            }
        }
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        if self.quiesced {
            self.quiesced = false;
            self.resume_follower_timer();
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.progress.clear();
        self.promotions.extend(
            self.catching_up
                .drain(..)
                .map(|c| Promotion::Cancelled { id: c.id }),
        );
        self.pending_reads.clear();
        self.transferee = None;
        self.forget_uncommitted();
        // The election timer keeps running: figure 2 resets it only on
        // hearing from a leader or granting a vote. Resetting it on every
        // newer term lets two candidates with stale logs starve the nodes
        // that could win (seen in simulation).
    }

    pub(super) fn become_candidate(&mut self, term: Term) {
        self.term = term;
        self.vote = Some(self.id);
        self.start_campaign(Role::Candidate);
    }

    pub(super) fn become_pre_candidate(&mut self) {
        // Term and vote stay: a failed pre-vote leaves no trace.
        self.start_campaign(Role::PreCandidate);
    }

    /// What a candidate and a pre-candidate both forget as they ask for votes.
    pub(super) fn start_campaign(&mut self, role: Role) {
        self.role = role;
        self.leader = None;
        self.quiesced = false;
        self.votes.clear();
        self.progress.clear();
        self.pending_reads.clear();
        self.transferee = None;
        self.forget_uncommitted();
        self.reset_election_timer();
    }

    /// A leader that has not heard from a quorum within an election timeout
    /// steps down, so clients stop waiting on it (thesis §6.2).
    pub(super) fn check_quorum(&mut self) {
        if !self.config.check_quorum {
            return;
        }
        let id = self.id;
        let progress = &self.progress;
        let active = self
            .configuration
            .has_quorum(|v| v == id || progress.iter().any(|p| p.id == v && p.recent_active));
        for p in &mut self.progress {
            p.recent_active = false;
        }
        if !active {
            trace_event!(
                info,
                node = self.id.0,
                term = self.term.0,
                why = "check-quorum lost: no quorum heard within an election timeout",
                "stepped down"
            );
            self.become_follower(self.term, None);
        }
    }

    pub(super) fn become_leader(&mut self) {
        trace_event!(
            info,
            node = self.id.0,
            term = self.term.0,
            // Our own vote and the others' granted ones.
            votes = 1 + self.votes.iter().filter(|(_, granted)| *granted).count(),
            voters = self.configuration.voters().len(),
            "became leader"
        );
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.quiesced = false;
        self.votes.clear();
        self.transferee = None;
        self.forget_uncommitted();
        self.lease_until = 0;
        self.lease_forfeited = false;
        self.round_sent.clear();
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        let next = self.log.last_index().next();
        let id = self.id;
        self.progress = self
            .configuration
            .members()
            .filter(|m| *m != id)
            .map(|m| Progress::new(m, next))
            .collect();
        // A no-op entry of the new term lets entries of earlier terms commit
        // (§5.4.2) without waiting for a client.
        self.log.push(Entry {
            term: self.term,
            index: next,
            data: Bytes::new(),
        });
        // A joint configuration inherited committed is finished at once
        // (otherwise when the no-op commits it).
        self.after_commit();
    }

    // ----- elections -----

    pub(super) fn handle_request_vote(
        &mut self,
        from: NodeId,
        last_log_index: LogIndex,
        last_log_term: Term,
    ) -> Result<(), Error> {
        let can_vote = self.vote == Some(from) || (self.vote.is_none() && self.leader.is_none());
        let granted = can_vote && self.log.is_up_to_date(last_log_index, last_log_term);
        trace_event!(
            debug,
            node = self.id.0,
            term = self.term.0,
            peer = from.0,
            granted,
            why = if granted {
                "log up to date"
            } else if !can_vote && self.vote.is_some() {
                "already voted"
            } else if !can_vote {
                "leader known in this term"
            } else {
                "stale log"
            },
            "vote"
        );
        if granted {
            self.vote = Some(from);
            self.election_elapsed = 0;
        }
        self.reply(from, MessageBody::RequestVoteResponse { granted });
        Ok(())
    }

    /// Answers a pre-vote: would we vote for this candidate if it started
    /// an election? Changes nothing here, so the answer goes out at once.
    pub(super) fn handle_pre_vote(
        &mut self,
        from: NodeId,
        term: Term,
        last_log_index: LogIndex,
        last_log_term: Term,
    ) {
        let could_vote = term > self.term
            || self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none());
        // Thesis §9.6: refuse while a leader is being heard from, so a
        // rejoining node cannot unseat it; and while this node honours a
        // lease (it would ignore the RequestVote that follows, and a granted
        // pre-vote would only raise the candidate's term, which then unseats
        // the leader when the candidate is heard: seen in simulation).
        let granted = could_vote
            && !self.heard_from_leader()
            && !self.in_lease()
            && self.log.is_up_to_date(last_log_index, last_log_term);
        trace_event!(
            debug,
            node = self.id.0,
            term = self.term.0,
            peer = from.0,
            granted,
            why = if granted {
                "log up to date"
            } else if !could_vote {
                "already voted or leader known in this term"
            } else if self.heard_from_leader() {
                "leader heard from"
            } else if self.in_lease() {
                "lease"
            } else {
                "stale log"
            },
            "pre-vote"
        );
        self.outbox.push(Message {
            from: self.id,
            to: from,
            term: if granted { term } else { self.term },
            body: MessageBody::PreVoteResponse { granted },
        });
    }

    pub(super) fn handle_vote_response(&mut self, from: NodeId, granted: bool) {
        if !self.votes.iter().any(|(v, _)| *v == from) {
            self.votes.push((from, granted));
        }
        self.tally_votes();
    }

    pub(super) fn tally_votes(&mut self) {
        if !matches!(self.role, Role::Candidate | Role::PreCandidate) {
            return;
        }
        let pre_vote = self.role == Role::PreCandidate;
        // Our own vote counts once it is durable: a restart must not let us
        // vote for someone else in this term. A pre-vote changes nothing.
        let self_vote = pre_vote
            || (self.durable_hard_state.term == self.term
                && self.durable_hard_state.vote == Some(self.id));
        let id = self.id;
        let votes = &self.votes;
        let vote_of = |v: NodeId| -> Option<bool> {
            if v == id {
                self_vote.then_some(true)
            } else {
                votes.iter().find(|(n, _)| *n == v).map(|(_, g)| *g)
            }
        };
        if self.configuration.has_quorum(|v| vote_of(v) == Some(true)) {
            if pre_vote {
                let term = self.term.next();
                trace_event!(
                    info,
                    node = self.id.0,
                    term = term.0,
                    pre_vote = false,
                    why = "pre-vote won",
                    "campaign started"
                );
                self.become_candidate(term);
                self.request_votes(false, false);
            } else if self_vote {
                self.become_leader();
            }
            // Otherwise the others' votes already make a quorum, but this
            // node leads only once its term and vote are durable (`advance`
            // tallies again). A leader whose term is not durable could crash,
            // restart in the previous term, win the same term again and
            // append different entries at indices it already sent: two
            // entries with one index and term (seen in simulation).
        } else if self
            .configuration
            .has_quorum(|v| v != id && vote_of(v) == Some(false))
        {
            trace_event!(
                info,
                node = self.id.0,
                term = self.term.0,
                pre_vote,
                why = "a quorum refused",
                "campaign lost"
            );
            self.become_follower(self.term, None);
        }
    }
}
