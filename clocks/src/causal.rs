//! Causal delivery of broadcast messages (Birman, Schiper, Stephenson, "Lightweight
//! causal and atomic group multicast", 1991), keyed by vector clocks.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use crate::dot::Dot;
use crate::vector::VectorClock;

/// Why a message was refused. The buffer is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CausalError {
    /// The message must wait for others but the buffer already holds its
    /// capacity of waiting messages. A message that can be delivered at once
    /// is never refused, so a full buffer cannot deadlock.
    #[error("causal buffer full: {capacity} messages already waiting")]
    Full {
        /// The configured capacity.
        capacity: usize,
    },
    /// The message's clock has no entry for its own sender, so it cannot be
    /// one of the sender's broadcasts.
    #[error("message clock has no entry for its sender")]
    MissingSenderEntry,
    /// The message claims to depend on broadcasts of this very process that it
    /// never made: it could never be delivered.
    #[error("message depends on local broadcast {claimed}, only {sent} were sent")]
    AheadOfLocal {
        /// The local counter the message claims.
        claimed: u64,
        /// Broadcasts this process actually made.
        sent: u64,
    },
}

/// What [`CausalBuffer::receive`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Deliverable now (possibly with others it unblocked): poll for it.
    Ready,
    /// Buffered until the messages it depends on are delivered.
    Waiting,
    /// Already delivered or already buffered: dropped.
    Duplicate,
}

/// A message released in causal order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery<A, M> {
    /// Who broadcast it.
    pub sender: A,
    /// The vector clock it was broadcast with.
    pub clock: VectorClock<A>,
    /// The payload.
    pub message: M,
}

/// A causal-delivery queue for one member of a broadcast group (the causal
/// broadcast of Birman, Schiper and Stephenson, 1991).
///
/// Each broadcast carries the sender's vector clock, whose own entry counts
/// the sender's broadcasts. A message from `s` with clock `V` is delivered
/// once this member has delivered exactly `V[s] - 1` messages from `s` and at
/// least `V[k]` from every other `k`: then everything it causally depends on
/// has been delivered first. Inputs go in with [`receive`](Self::receive),
/// deliveries come out of [`poll_deliver`](Self::poll_deliver) until `None`.
///
/// ```
/// use quorate_clocks::{Admission, CausalBuffer, Dot};
///
/// let mut alice = CausalBuffer::<_, &str>::new("alice", 64);
/// let mut bob = CausalBuffer::new("bob", 64);
/// let mut carol = CausalBuffer::<_, &str>::new("carol", 64);
/// let question = alice.broadcast();
/// bob.receive("alice", question.clone(), "lunch?").unwrap();
/// while bob.poll_deliver().is_some() {}
/// let answer = bob.broadcast(); // depends on the question
/// // Carol gets the answer first: it waits for the question.
/// assert_eq!(carol.receive("bob", answer, "yes!"), Ok(Admission::Waiting));
/// assert_eq!(carol.poll_deliver(), None);
/// assert_eq!(carol.missing(), [Dot::new("alice", 1)]); // what to ask for
/// carol.receive("alice", question, "lunch?").unwrap();
/// assert_eq!(carol.poll_deliver().unwrap().message, "lunch?");
/// assert_eq!(carol.poll_deliver().unwrap().message, "yes!");
/// ```
#[derive(Debug, Clone)]
pub struct CausalBuffer<A, M> {
    local: A,
    /// Per actor, how many of its broadcasts were delivered here (for the
    /// local actor: how many it made).
    delivered: VectorClock<A>,
    /// Waiting messages by sender, then by the sender's broadcast counter.
    waiting: BTreeMap<A, BTreeMap<u64, (VectorClock<A>, M)>>,
    waiting_len: usize,
    ready: VecDeque<Delivery<A, M>>,
    capacity: usize,
}

impl<A: Ord + Clone, M> CausalBuffer<A, M> {
    /// A buffer for group member `local`, holding at most `capacity`
    /// messages waiting for their causal predecessors.
    pub fn new(local: A, capacity: usize) -> Self {
        Self {
            local,
            delivered: VectorClock::new(),
            waiting: BTreeMap::new(),
            waiting_len: 0,
            ready: VecDeque::new(),
            capacity,
        }
    }

    /// The member this buffer delivers for.
    pub fn local(&self) -> &A {
        &self.local
    }

    /// What has been delivered: per sender, the count of its broadcasts.
    pub fn delivered(&self) -> &VectorClock<A> {
        &self.delivered
    }

    /// Messages waiting for their causal predecessors.
    pub fn waiting_len(&self) -> usize {
        self.waiting_len
    }

    /// Messages ready to be polled.
    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// The configured bound on waiting messages.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The broadcasts this member knows it is missing: for every actor that
    /// a waiting message is blocked on, the next dot needed from that actor,
    /// in actor order. Ask peers for these to unblock the queue.
    pub fn missing(&self) -> Vec<Dot<A>> {
        let mut needed: BTreeMap<&A, u64> = BTreeMap::new();
        for queue in self.waiting.values() {
            let Some((clock, _)) = queue.values().next() else {
                continue;
            };
            for (actor, counter) in clock.iter() {
                let next = self.delivered.get(actor).saturating_add(1);
                // A buffered message is not missing: its own blockers are
                // reported through it, as it heads its sender's queue.
                let buffered = self
                    .waiting
                    .get(actor)
                    .is_some_and(|queue| queue.contains_key(&next));
                if counter >= next && !buffered {
                    needed.insert(actor, next);
                }
            }
        }
        needed
            .into_iter()
            .map(|(actor, counter)| Dot::new(actor.clone(), counter))
            .collect()
    }

    /// Records a local broadcast and returns the clock to send with it.
    /// The local member delivers its own broadcasts at once, so they are not
    /// queued here.
    pub fn broadcast(&mut self) -> VectorClock<A> {
        self.delivered.increment(self.local.clone());
        self.delivered.clone()
    }

    /// Takes in a broadcast from `sender` stamped `clock`.
    pub fn receive(
        &mut self,
        sender: A,
        clock: VectorClock<A>,
        message: M,
    ) -> Result<Admission, CausalError> {
        let sequence = clock.get(&sender);
        if sequence == 0 {
            return Err(CausalError::MissingSenderEntry);
        }
        if sequence <= self.delivered.get(&sender) {
            return Ok(Admission::Duplicate);
        }
        let sent = self.delivered.get(&self.local);
        let claimed = clock.get(&self.local);
        if claimed > sent {
            return Err(CausalError::AheadOfLocal { claimed, sent });
        }
        if self
            .waiting
            .get(&sender)
            .is_some_and(|queue| queue.contains_key(&sequence))
        {
            return Ok(Admission::Duplicate);
        }
        if self.is_deliverable(&sender, &clock) {
            self.deliver(sender, clock, message);
            self.release_waiting();
            return Ok(Admission::Ready);
        }
        if self.waiting_len >= self.capacity {
            return Err(CausalError::Full {
                capacity: self.capacity,
            });
        }
        self.waiting
            .entry(sender)
            .or_default()
            .insert(sequence, (clock, message));
        self.waiting_len += 1;
        Ok(Admission::Waiting)
    }

    /// The next message in causal order, if any is deliverable.
    pub fn poll_deliver(&mut self) -> Option<Delivery<A, M>> {
        self.ready.pop_front()
    }

    fn is_deliverable(&self, sender: &A, clock: &VectorClock<A>) -> bool {
        clock.iter().all(|(actor, counter)| {
            let seen = self.delivered.get(actor);
            if actor == sender {
                counter == seen.saturating_add(1)
            } else {
                counter <= seen
            }
        })
    }

    fn deliver(&mut self, sender: A, clock: VectorClock<A>, message: M) {
        self.delivered.observe(sender.clone(), clock.get(&sender));
        self.ready.push_back(Delivery {
            sender,
            clock,
            message,
        });
    }

    /// Moves every waiting message that became deliverable to the ready queue.
    fn release_waiting(&mut self) {
        // Only the head of each sender's queue can be next; repeat until a
        // full pass releases nothing.
        loop {
            let next = self.waiting.iter().find_map(|(sender, queue)| {
                let (&sequence, (clock, _)) = queue.first_key_value()?;
                self.is_deliverable(sender, clock)
                    .then(|| (sender.clone(), sequence))
            });
            let Some((sender, sequence)) = next else {
                return;
            };
            let Some(queue) = self.waiting.get_mut(&sender) else {
                return;
            };
            let Some((clock, message)) = queue.remove(&sequence) else {
                return;
            };
            if queue.is_empty() {
                self.waiting.remove(&sender);
            }
            self.waiting_len -= 1;
            self.deliver(sender, clock, message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_bounds() {
        let mut alice = CausalBuffer::<_, u8>::new(1u64, 8);
        let mut bob = CausalBuffer::<_, u8>::new(2u64, 1);
        let m1 = alice.broadcast();
        let m2 = alice.broadcast();
        let m3 = alice.broadcast();
        assert_eq!(bob.receive(1, m2.clone(), 2), Ok(Admission::Waiting));
        assert_eq!(bob.receive(1, m2.clone(), 2), Ok(Admission::Duplicate));
        assert_eq!(bob.missing(), [Dot::new(1, 1)]);
        // Full: m3 must wait and there is no room; the buffer is unchanged.
        assert_eq!(
            bob.receive(1, m3.clone(), 3),
            Err(CausalError::Full { capacity: 1 })
        );
        assert_eq!(bob.waiting_len(), 1);
        // m1 is deliverable, so it is taken even though the buffer is full.
        assert_eq!(bob.receive(1, m1.clone(), 1), Ok(Admission::Ready));
        assert_eq!(bob.poll_deliver().map(|d| d.message), Some(1));
        assert_eq!(bob.poll_deliver().map(|d| d.message), Some(2));
        assert_eq!(bob.poll_deliver(), None);
        assert_eq!(bob.receive(1, m1, 1), Ok(Admission::Duplicate));
        assert_eq!(bob.receive(1, m3, 3), Ok(Admission::Ready));
        assert_eq!(bob.waiting_len(), 0);
    }

    #[test]
    fn malformed_clocks_are_refused() {
        let mut bob = CausalBuffer::<_, ()>::new(2u64, 4);
        let no_sender: VectorClock<u64> = [(3, 1)].into_iter().collect();
        assert_eq!(
            bob.receive(1, no_sender, ()),
            Err(CausalError::MissingSenderEntry)
        );
        let forged: VectorClock<u64> = [(1, 1), (2, 5)].into_iter().collect();
        assert_eq!(
            bob.receive(1, forged, ()),
            Err(CausalError::AheadOfLocal {
                claimed: 5,
                sent: 0
            })
        );
        assert_eq!(bob.waiting_len(), 0);
    }
}
