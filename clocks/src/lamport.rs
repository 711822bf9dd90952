//! Lamport clocks: one counter per process that orders events consistently
//! with happened-before, and a total order on stamps tie-broken by node id.

use alloc::vec::Vec;

use crate::encoding::{self, Codec, DecodeError, Kind, MAX_COUNTER};

/// Why a Lamport clock refused an input. The clock is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LamportError {
    /// A remote or restored time is above [`MAX_COUNTER`]; accepting it would
    /// let one forged stamp exhaust the clock of everyone who hears it.
    #[error("Lamport time {time} is above the accepted maximum {MAX_COUNTER}")]
    TimeOutOfRange {
        /// The refused time.
        time: u64,
    },
}

/// The stamp of one event: its Lamport time and the node that issued it.
///
/// Stamps are totally ordered by `(time, node)`: if event `a` happened before
/// event `b` then `a < b`, and stamps from different nodes never compare equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LamportTimestamp<N> {
    /// The Lamport time of the event. Compared first.
    pub time: u64,
    /// The node that issued the stamp. Breaks ties between equal times.
    pub node: N,
}

impl<N> LamportTimestamp<N> {
    /// A stamp for `node` at `time`.
    pub const fn new(time: u64, node: N) -> Self {
        Self { time, node }
    }
}

impl<N: core::fmt::Display> core::fmt::Display for LamportTimestamp<N> {
    /// Formats as `time@node`, e.g. `7@n2`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}@{}", self.time, self.node)
    }
}

impl<N: Codec> LamportTimestamp<N> {
    /// The compact binary encoding (see [`encoding`](crate::encoding)).
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_time_node(Kind::LamportTimestamp, self.time, &self.node)
    }

    /// Decodes [`LamportTimestamp::to_bytes`] output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (time, node) = decode_time_node(bytes, Kind::LamportTimestamp)?;
        Ok(Self { time, node })
    }
}

/// A Lamport clock owned by one node (single-threaded; see
/// [`AtomicLamportClock`](crate::AtomicLamportClock) to share one across threads).
///
/// ```
/// use quorate_clocks::LamportClock;
///
/// let mut alice = LamportClock::new("alice");
/// let mut bob = LamportClock::new("bob");
/// let sent = alice.send();                 // alice: 1
/// bob.tick();                              // bob: 1
/// let got = bob.receive(&sent).unwrap();   // bob: max(1, 1) + 1 = 2
/// assert!(sent < got);
/// assert_eq!(got.time, 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(try_from = "LamportClockRepr<N>", into = "LamportClockRepr<N>")
)]
#[cfg_attr(
    feature = "serde",
    serde(bound(deserialize = "N: serde::Deserialize<'de>"))
)]
#[cfg_attr(
    feature = "serde",
    serde(bound(serialize = "N: serde::Serialize + Clone"))
)]
pub struct LamportClock<N> {
    node: N,
    time: u64,
}

impl<N> LamportClock<N> {
    /// A clock for `node` that has seen no event (time 0).
    pub const fn new(node: N) -> Self {
        Self { node, time: 0 }
    }

    /// A clock restored at `time` (for example from storage after a restart).
    pub fn with_time(node: N, time: u64) -> Result<Self, LamportError> {
        check_time(time)?;
        Ok(Self { node, time })
    }

    /// The node this clock stamps events for.
    pub fn node(&self) -> &N {
        &self.node
    }

    /// The time of the last event (0 before any).
    pub fn time(&self) -> u64 {
        self.time
    }

    /// Gives back the node id, consuming the clock.
    pub fn into_node(self) -> N {
        self.node
    }

    /// A clock at a time reached by local increments (may exceed MAX_COUNTER).
    pub(crate) const fn from_parts(node: N, time: u64) -> Self {
        Self { node, time }
    }
}

impl<N: Clone> LamportClock<N> {
    /// Records a local event and returns its stamp.
    pub fn tick(&mut self) -> LamportTimestamp<N> {
        // Cannot saturate: `time` starts at most MAX_COUNTER (see there).
        self.time = self.time.saturating_add(1);
        self.stamp()
    }

    /// Records a send event and returns the stamp to attach to the message.
    pub fn send(&mut self) -> LamportTimestamp<N> {
        self.tick()
    }

    /// Records the receipt of a message stamped `remote` and returns the stamp
    /// of the receive event, which is greater than both `remote` and every
    /// earlier local stamp.
    pub fn receive(
        &mut self,
        remote: &LamportTimestamp<N>,
    ) -> Result<LamportTimestamp<N>, LamportError> {
        check_time(remote.time)?;
        self.time = self.time.max(remote.time).saturating_add(1);
        Ok(self.stamp())
    }

    /// The stamp of the last event, without recording a new one.
    pub fn stamp(&self) -> LamportTimestamp<N> {
        LamportTimestamp::new(self.time, self.node.clone())
    }
}

impl<N: Codec> LamportClock<N> {
    /// The compact binary encoding (see [`encoding`](crate::encoding)).
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_time_node(Kind::LamportClock, self.time, &self.node)
    }

    /// Decodes [`LamportClock::to_bytes`] output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (time, node) = decode_time_node(bytes, Kind::LamportClock)?;
        Ok(Self { node, time })
    }
}

/// A stamp and a clock share one body: the time, then the node.
fn encode_time_node<N: Codec>(kind: Kind, time: u64, node: &N) -> Vec<u8> {
    let mut out = encoding::begin(kind);
    encoding::write_varint(&mut out, time.into());
    node.encode(&mut out);
    out
}

fn decode_time_node<N: Codec>(bytes: &[u8], kind: Kind) -> Result<(u64, N), DecodeError> {
    encoding::decode_exact(bytes, kind, |reader| {
        let time = reader.read_counter()?;
        Ok((time, N::decode(reader)?))
    })
}

pub(crate) fn check_time(time: u64) -> Result<(), LamportError> {
    if time > MAX_COUNTER {
        Err(LamportError::TimeOutOfRange { time })
    } else {
        Ok(())
    }
}

/// The serde shape of a [`LamportClock`], validated on the way in.
#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
struct LamportClockRepr<N> {
    node: N,
    time: u64,
}

#[cfg(feature = "serde")]
impl<N> TryFrom<LamportClockRepr<N>> for LamportClock<N> {
    type Error = LamportError;
    fn try_from(repr: LamportClockRepr<N>) -> Result<Self, LamportError> {
        Self::with_time(repr.node, repr.time)
    }
}

#[cfg(feature = "serde")]
impl<N> From<LamportClock<N>> for LamportClockRepr<N> {
    fn from(clock: LamportClock<N>) -> Self {
        Self {
            node: clock.node,
            time: clock.time,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lamport_paper_rules() {
        // IR1: each event increments; IR2: receive moves past the message's stamp.
        let mut p = LamportClock::new(1u64);
        let mut q = LamportClock::new(2u64);
        assert_eq!(p.tick().time, 1);
        let m = p.send();
        assert_eq!(m.time, 2);
        let r = q.receive(&m).unwrap();
        assert_eq!(r.time, 3);
        // A receive of an old stamp still advances (it is an event).
        let old = LamportTimestamp::new(1, 1u64);
        assert_eq!(q.receive(&old).unwrap().time, 4);
    }

    #[test]
    fn ties_break_by_node() {
        let a = LamportTimestamp::new(5, 1u64);
        let b = LamportTimestamp::new(5, 2u64);
        let c = LamportTimestamp::new(6, 0u64);
        assert!(a < b && b < c);
        assert_eq!(alloc::format!("{a}"), "5@1");
    }

    #[test]
    fn forged_time_is_refused_and_clock_unchanged() {
        let mut clock = LamportClock::new(1u64);
        clock.tick();
        let forged = LamportTimestamp::new(u64::MAX, 9u64);
        assert_eq!(
            clock.receive(&forged),
            Err(LamportError::TimeOutOfRange { time: u64::MAX })
        );
        assert_eq!(clock.time(), 1);
        assert!(LamportClock::with_time(1u64, MAX_COUNTER + 1).is_err());
        let mut edge = LamportClock::with_time(1u64, MAX_COUNTER).unwrap();
        assert_eq!(edge.tick().time, MAX_COUNTER + 1);
    }

    #[test]
    fn bytes_round_trip() {
        let clock = LamportClock::with_time(300u32, 1 << 40).unwrap();
        assert_eq!(LamportClock::from_bytes(&clock.to_bytes()), Ok(clock));
        let stamp = LamportTimestamp::new(7, alloc::string::String::from("n1"));
        let bytes = stamp.to_bytes();
        assert_eq!(LamportTimestamp::from_bytes(&bytes), Ok(stamp));
        // A stamp is not a clock.
        assert!(matches!(
            LamportClock::<alloc::string::String>::from_bytes(&bytes),
            Err(DecodeError::WrongKind { .. })
        ));
    }
}
