//! The send queue of one link with a bandwidth: what waits behind the
//! message being transmitted, in one FIFO lane or an urgent and a bulk lane.

use alloc::collections::VecDeque;
use core::time::Duration;

use super::{MessageId, SimTime};

/// A message accepted by a busy link, waiting for its turn on the wire.
pub(super) struct Waiting<M> {
    pub(super) id: MessageId,
    pub(super) sent_at: SimTime,
    pub(super) msg: M,
    pub(super) size: u64,
    pub(super) urgent: bool,
    /// Drawn at send time, so that the random draws do not depend on how
    /// long a message waits.
    pub(super) jitter: Duration,
    /// The duplicate copy's jitter, if the link duplicated it.
    pub(super) duplicate: Option<Duration>,
}

impl<M> Waiting<M> {
    /// The copies this entry stands for.
    pub(super) fn copies(&self) -> usize {
        1 + usize::from(self.duplicate.is_some())
    }
}

/// One FIFO queue with its byte count.
pub(super) struct Lane<M> {
    items: VecDeque<Waiting<M>>,
    bytes: u64,
}

impl<M> Default for Lane<M> {
    fn default() -> Self {
        Lane {
            items: VecDeque::new(),
            bytes: 0,
        }
    }
}

impl<M> Lane<M> {
    /// Whether `size` more bytes fit under the bounds.
    pub(super) fn admits(
        &self,
        size: u64,
        max_bytes: Option<u64>,
        max_messages: Option<u64>,
    ) -> bool {
        let messages = u64::try_from(self.items.len()).unwrap_or(u64::MAX);
        max_messages.is_none_or(|m| messages < m)
            && max_bytes.is_none_or(|b| self.bytes.saturating_add(size) <= b)
    }
}

/// A link's state between sends: when it is free and what waits.
pub(super) struct LinkQueue<M> {
    /// When the message being transmitted (if any) is fully on the wire.
    pub(super) busy_until: SimTime,
    pub(super) urgent: Lane<M>,
    pub(super) bulk: Lane<M>,
}

impl<M> Default for LinkQueue<M> {
    fn default() -> Self {
        LinkQueue {
            busy_until: SimTime::ZERO,
            urgent: Lane::default(),
            bulk: Lane::default(),
        }
    }
}

impl<M> LinkQueue<M> {
    pub(super) fn is_empty(&self) -> bool {
        self.urgent.items.is_empty() && self.bulk.items.is_empty()
    }

    /// Whether a message sent at `now` goes on the wire at once.
    pub(super) fn is_idle(&self, now: SimTime) -> bool {
        self.is_empty() && self.busy_until <= now
    }

    pub(super) fn lane(&self, urgent: bool) -> &Lane<M> {
        if urgent { &self.urgent } else { &self.bulk }
    }

    pub(super) fn push(&mut self, w: Waiting<M>) {
        let lane = if w.urgent {
            &mut self.urgent
        } else {
            &mut self.bulk
        };
        lane.bytes = lane.bytes.saturating_add(w.size);
        lane.items.push_back(w);
    }

    /// The waiting messages in the order they will be transmitted, if
    /// nothing else is sent: the urgent lane first.
    pub(super) fn in_order(&self) -> impl Iterator<Item = &Waiting<M>> + '_ {
        self.urgent.items.iter().chain(self.bulk.items.iter())
    }

    /// When the next message's transmission begins, if one waits.
    pub(super) fn next_start(&self) -> Option<SimTime> {
        self.in_order()
            .next()
            .map(|w| self.busy_until.max(w.sent_at))
    }

    /// Takes the next message to transmit.
    pub(super) fn pop(&mut self) -> Option<Waiting<M>> {
        let lane = if self.urgent.items.is_empty() {
            &mut self.bulk
        } else {
            &mut self.urgent
        };
        let w = lane.items.pop_front()?;
        lane.bytes = lane.bytes.saturating_sub(w.size);
        Some(w)
    }

    /// Removes every waiting message.
    pub(super) fn drain(&mut self) -> impl Iterator<Item = Waiting<M>> + '_ {
        self.urgent.bytes = 0;
        self.bulk.bytes = 0;
        self.urgent.items.drain(..).chain(self.bulk.items.drain(..))
    }

    /// How many copies wait.
    pub(super) fn copies(&self) -> usize {
        self.in_order().map(Waiting::copies).sum()
    }

    pub(super) fn messages(&self) -> u64 {
        u64::try_from(self.urgent.items.len() + self.bulk.items.len()).unwrap_or(u64::MAX)
    }

    pub(super) fn bytes(&self) -> u64 {
        self.urgent.bytes.saturating_add(self.bulk.bytes)
    }
}
