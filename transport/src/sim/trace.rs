//! What happened to messages in the simulated network: counters and a
//! compact, payload-free trace.

use core::fmt;
use core::time::Duration;

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

/// Why the simulated network lost a message (not why a receiver refused
/// one: that is the receiving protocol's business, e.g. Raft's `DropReason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum LossCause {
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
    /// The link's queue (or its lane) was full: the sender's queue refused
    /// it. Only links with a bandwidth and a queue bound do this.
    QueueFull,
}

/// What happened to a message at one point in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum TraceKind {
    /// Accepted by the network: scheduled for delivery, or queued on a link
    /// with a bandwidth.
    Sent,
    /// On a link with a bandwidth: the message left the link's queue and its
    /// transmission began (recorded when the network catches up to that
    /// time, so it can follow later events in the trace).
    OnWire,
    /// A second copy was scheduled.
    Duplicated,
    /// Dropped, never to be delivered (this copy).
    Dropped(LossCause),
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
    /// Messages refused by a full link queue.
    pub queue_full: u64,
}

impl Stats {
    /// All drops, whatever the cause.
    pub fn dropped(&self) -> u64 {
        self.lost + self.partitioned + self.crashed + self.filtered + self.queue_full
    }

    pub(crate) fn count_drop(&mut self, cause: LossCause) {
        let counter = match cause {
            LossCause::Lost => &mut self.lost,
            LossCause::Partitioned => &mut self.partitioned,
            LossCause::Crashed => &mut self.crashed,
            LossCause::Filtered => &mut self.filtered,
            LossCause::QueueFull => &mut self.queue_full,
        };
        *counter += 1;
    }
}

/// Counters for one directed link, from [`Network::link_stats`](super::Network::link_stats).
///
/// "Sent" counts a message once, when it goes on the wire (at once on a
/// link without bandwidth, when its transmission begins on one with);
/// duplicates are not sent twice. "Queued" is what waits behind the
/// message being transmitted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LinkStats {
    /// Messages that went on the wire.
    pub messages_sent: u64,
    /// Their bytes, as the network's size function counts them.
    pub bytes_sent: u64,
    /// How many of them went in the urgent lane.
    pub urgent_sent: u64,
    /// Messages waiting in the link's queues now.
    pub queued_messages: u64,
    /// Bytes waiting in the link's queues now.
    pub queued_bytes: u64,
    /// The most messages that ever waited at once.
    pub max_queued_messages: u64,
    /// The most bytes that ever waited at once.
    pub max_queued_bytes: u64,
    /// The longest a message waited before its transmission began.
    pub max_queue_delay: Duration,
    /// Copies handed to the driver.
    pub delivered: u64,
    /// Copies dropped on this link, whatever the cause (`queue_full` included).
    pub dropped: u64,
    /// Messages the link's full queue refused.
    pub queue_full: u64,
}
