//! Linearizable reads: ReadIndex rounds and leader leases.

use super::{Node, PendingRead};
use crate::error::Error;
use crate::ready::{ReadState, Role};
use crate::storage::Storage;

impl<S: Storage> Node<S> {
    /// Whether this node heard from a leader within the election timeout;
    /// with check-quorum such a node ignores disruptive elections.
    pub(super) fn in_lease(&self) -> bool {
        // A node that restarted may have promised a leader its lease before
        // it stopped: it honours that for an election timeout.
        let starting = self.restarted && self.ticks < u64::from(self.config.election_tick);
        self.config.check_quorum && (self.heard_from_leader() || starting)
    }

    /// Whether a leader was heard from within the election timeout.
    pub(super) fn heard_from_leader(&self) -> bool {
        self.leader.is_some() && self.election_elapsed < self.config.election_tick
    }

    /// Asks for a linearizable read without writing to the log (ReadIndex,
    /// thesis §6.4). The leader records its commit index, confirms with a
    /// heartbeat round that it still leads, and then reports a
    /// [`ReadState`] with this `id` in a [`Ready`](crate::Ready): serve the read once the
    /// applied index reaches the state's index. A leader that loses
    /// leadership first drops its pending reads; retry them elsewhere.
    ///
    /// The round goes out with the next [`ready`](Node::ready), so all the
    /// reads asked before it share one round (each keeps the commit index
    /// of when it was asked): batch reads by calling this several times
    /// between two `ready` calls.
    pub fn read_index(&mut self, id: u64) -> Result<(), Error> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader_hint: self.leader,
            });
        }
        if self.log.term(self.log.committed)? != Some(self.term) {
            return Err(Error::NoCommitInTerm { term: self.term });
        }
        // Confirmed by answers to the next heartbeat round, which goes out
        // after this call: at the next `ready` or tick, whichever is first.
        self.pending_reads.push_back(PendingRead {
            id,
            index: self.log.committed,
            round: self.read_round + 1,
        });
        self.wake();
        self.confirm_reads();
        Ok(())
    }

    /// Serves a linearizable read at once if the leader holds a lease: a
    /// quorum answered a heartbeat sent less than a lease period ago, so
    /// (with check-quorum, and clocks drifting less than
    /// [`Config::max_clock_drift_ticks`](crate::Config::max_clock_drift_ticks)) no other leader can have been
    /// elected since. The [`ReadState`] comes in the next [`Ready`](crate::Ready).
    /// Fails with [`Error::LeaseUnavailable`]; then use
    /// [`read_index`](Node::read_index).
    pub fn read_lease(&mut self, id: u64) -> Result<(), Error> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader_hint: self.leader,
            });
        }
        if self.log.term(self.log.committed)? != Some(self.term) {
            return Err(Error::NoCommitInTerm { term: self.term });
        }
        let single = self.configuration.voters().len() == 1 && !self.configuration.is_joint();
        let leased = self.ticks < self.lease_until || single;
        let transferring = self.transferee.is_some() || self.lease_forfeited;
        if !self.config.check_quorum || transferring || !leased {
            return Err(Error::LeaseUnavailable);
        }
        self.read_states.push(ReadState {
            id,
            index: self.log.committed,
        });
        self.wake();
        Ok(())
    }

    /// Extends the lease to the newest heartbeat round a quorum answered.
    pub(super) fn renew_lease(&mut self) {
        let id = self.id;
        let progress = &self.progress;
        let round = self.configuration.committed_by_majority(|v| {
            if v == id {
                u64::MAX
            } else {
                progress
                    .iter()
                    .find(|p| p.id == v)
                    .map_or(0, |p| p.acked_round)
            }
        });
        while let Some(&(r, sent)) = self.round_sent.front() {
            if r > round {
                break;
            }
            self.round_sent.pop_front();
            if r == round {
                let lease = self
                    .config
                    .election_tick
                    .saturating_sub(self.config.max_clock_drift_ticks + 1);
                self.lease_until = self.lease_until.max(sent + u64::from(lease));
            }
        }
    }

    /// Releases the pending reads whose round a quorum has answered.
    pub(super) fn confirm_reads(&mut self) {
        let id = self.id;
        while let Some(read) = self.pending_reads.front() {
            let progress = &self.progress;
            let confirmed = self.configuration.has_quorum(|v| {
                v == id
                    || progress
                        .iter()
                        .any(|p| p.id == v && p.acked_round >= read.round)
            });
            if !confirmed {
                break;
            }
            self.read_states.push(ReadState {
                id: read.id,
                index: read.index,
            });
            self.pending_reads.pop_front();
        }
    }

    /// Sends one heartbeat round for all the reads asked since the last
    /// round went out (ReadIndex batching): none if there are none.
    pub(super) fn send_read_round(&mut self) {
        let unsent = self
            .pending_reads
            .back()
            .is_some_and(|read| read.round > self.read_round);
        if unsent {
            self.broadcast_heartbeat(false);
        }
    }
}
