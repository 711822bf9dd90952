//! What happened to messages in the simulated network: counters and a
//! compact, payload-free trace.

use core::fmt;

use super::SimTime;

/// Identifies one sent message. A duplicate copy keeps its original's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MessageId(pub u64);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Why the network dropped a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum DropReason {
    /// The link's loss probability struck.
    Lost,
    /// The link was cut by a partition when the message was sent or when it
    /// was due.
    Partitioned,
    /// The sender was down when sending, or the receiver was down when the
    /// message was sent or crashed while it was in flight.
    Crashed,
    /// A message filter matched it.
    Filtered,
}

/// What happened to a message at one point in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum TraceKind {
    /// Accepted by the network and scheduled for delivery.
    Sent,
    /// A second copy was scheduled.
    Duplicated,
    /// Dropped, never to be delivered (this copy).
    Dropped(DropReason),
    /// Handed to the driver by [`poll_delivery`](super::Network::poll_delivery).
    Delivered,
}

/// One entry of the network trace. It has no payload, so traces stay small
/// and comparable whatever the message type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TraceEvent<N> {
    /// When it happened on the simulated clock.
    pub at: SimTime,
    /// Which message.
    pub id: MessageId,
    /// Its sender.
    pub from: N,
    /// Its addressee.
    pub to: N,
    /// What happened.
    pub kind: TraceKind,
}

impl<N: fmt::Debug> fmt::Display for TraceEvent<N> {
    /// One line, e.g. `0.001000000s #3 1->2 Delivered`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {:?}->{:?} {:?}",
            self.at, self.id, self.from, self.to, self.kind
        )
    }
}

/// Counters of what the network did with the messages it was given.
///
/// Every copy is eventually counted once as delivered or dropped, or is
/// still in flight: `sent + duplicated == delivered + dropped() + in_flight`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Stats {
    /// Messages offered to [`send`](super::Network::send), including those
    /// dropped at once.
    pub sent: u64,
    /// Extra copies scheduled by duplication.
    pub duplicated: u64,
    /// Copies handed to the driver.
    pub delivered: u64,
    /// Messages lost to the link's loss probability.
    pub lost: u64,
    /// Copies dropped by a partition.
    pub partitioned: u64,
    /// Copies dropped because a node was down.
    pub crashed: u64,
    /// Messages dropped by a filter.
    pub filtered: u64,
}

impl Stats {
    /// All drops, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.lost + self.partitioned + self.crashed + self.filtered
    }

    pub(crate) fn count_drop(&mut self, reason: DropReason) {
        let counter = match reason {
            DropReason::Lost => &mut self.lost,
            DropReason::Partitioned => &mut self.partitioned,
            DropReason::Crashed => &mut self.crashed,
            DropReason::Filtered => &mut self.filtered,
        };
        *counter += 1;
    }
}
