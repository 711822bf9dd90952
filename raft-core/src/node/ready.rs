//! The Ready pipeline: what the node hands the caller to persist, send and apply, and `advance`.

use super::{InFlight, Node};
use crate::error::Error;
use crate::ready::{Ready, Role, SoftState};
use crate::storage::Storage;
use crate::types::HardState;

impl<S: Storage> Node<S> {
    // ----- outputs -----

    /// Collects the work the node has for the application, or `None` if
    /// there is none. See [`Ready`] for what to do with it.
    pub fn ready(&mut self) -> Result<Option<Ready>, Error> {
        if self.role == Role::Leader {
            self.replicate()?;
            self.send_read_round();
        }
        let soft = SoftState {
            leader: self.leader,
            role: self.role,
        };
        let soft_state = (soft != self.soft_state).then_some(soft);
        let hs = self.hard_state();
        let hard_state = (hs != self.handed_hard_state).then_some(hs);
        if self.outbox.is_empty()
            && self.held.is_empty()
            && !self.log.has_unhanded_entries()
            && hard_state.is_none()
            && soft_state.is_none()
            && self.read_states.is_empty()
            && self.restored.is_none()
            && !self.log.has_committed_to_hand()
        {
            return Ok(None);
        }
        let committed_entries = self.log.take_committed(u64::MAX)?;
        let entries = self.log.take_unpersisted();
        let snapshot = self.restored.take();
        let mut messages = std::mem::take(&mut self.outbox);
        let mut held = std::mem::take(&mut self.held);
        if entries.is_empty()
            && hard_state.is_none()
            && snapshot.is_none()
            && self.in_flight.is_empty()
        {
            // Everything the replies assert is already durable.
            messages.append(&mut held);
        }
        self.soft_state = soft;
        self.handed_hard_state = hs;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight.push_back(InFlight {
            seq,
            persists_to: self.log.last_index(),
            hard_state,
            held,
            applies_to: committed_entries
                .last()
                .map_or(self.log.applied, |e| e.index),
            restores: snapshot.as_ref().map(|s| s.meta.index),
        });
        Ok(Some(Ready {
            seq,
            messages,
            entries,
            hard_state,
            committed_entries,
            soft_state,
            read_states: std::mem::take(&mut self.read_states),
            snapshot,
        }))
    }

    /// Acknowledges that `ready`'s entries and hard state are durable and its
    /// committed entries applied. Releases the replies that waited for it.
    pub fn advance(&mut self, ready: Ready) -> Result<(), Error> {
        let expected = self.in_flight.front().map_or(self.next_seq, |f| f.seq);
        if ready.seq != expected {
            return Err(Error::ReadyOutOfOrder {
                expected,
                got: ready.seq,
            });
        }
        let Some(done) = self.in_flight.pop_front() else {
            return Err(Error::ReadyOutOfOrder {
                expected,
                got: ready.seq,
            });
        };
        let durable_before = self.log.persisted();
        self.log.persisted_to(done.persists_to);
        if let Some(hs) = done.hard_state {
            self.durable_hard_state = hs;
        }
        self.log.applied_to(done.applies_to);
        if let Some(index) = done.restores {
            trace_event!(
                info,
                node = self.id.0,
                term = self.term.0,
                index = index.0,
                "snapshot installed"
            );
            self.log.snapshot_persisted(index);
        }
        self.outbox.extend(done.held);
        match self.role {
            Role::Candidate => self.tally_votes(),
            Role::PreCandidate => {}
            // The leader counts itself towards commitment only for durable
            // entries (thesis §10.2.1); only its durable index moving
            // above the commit index can raise it (acks commit on arrival).
            Role::Leader if self.log.persisted() > durable_before.max(self.log.committed) => {
                self.maybe_commit()?
            }
            Role::Leader => {}
            Role::Follower => {}
        }
        Ok(())
    }

    // ----- role changes -----

    pub(super) fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }
}
