//! What the simulated network needs to know about a message to model a
//! link's bandwidth and lanes: its size on the wire and whether it is urgent.

use alloc::vec::Vec;

use bytes::Bytes;

use crate::framing::{Flags, Frame, HEADER_LEN};

/// A message's cost on a simulated link: how many bytes it takes on the
/// wire, and whether it rides in the urgent lane of a link
/// [`with_lanes`](super::LinkConfig::with_lanes).
///
/// A [`Network`](super::Network) built with
/// [`new_sized`](super::Network::new_sized) reads both from here. Types
/// without an implementation can still give sizes and urgency to
/// [`Network::set_size_of`](super::Network::set_size_of) and
/// [`Network::set_urgent_of`](super::Network::set_urgent_of); otherwise every
/// message has size 0 (bandwidth never delays it) and is bulk.
///
/// ```
/// use bytes::Bytes;
/// use quorate_transport::framing::{ChannelId, Flags, Frame, HEADER_LEN};
/// use quorate_transport::sim::WireSize;
///
/// let vote = Frame::new(ChannelId(1), Bytes::from_static(b"vote")).with_flags(Flags::URGENT);
/// assert_eq!(vote.wire_size(), HEADER_LEN + 4);
/// assert!(vote.is_urgent());
/// assert!(!Bytes::from_static(b"gossip").is_urgent());
/// ```
pub trait WireSize {
    /// Bytes this message occupies on the wire.
    fn wire_size(&self) -> usize;

    /// Whether this message goes in the urgent lane; bulk unless overridden.
    fn is_urgent(&self) -> bool {
        false
    }
}

impl WireSize for Frame {
    /// The encoded frame: header plus payload.
    fn wire_size(&self) -> usize {
        HEADER_LEN.saturating_add(self.payload.len())
    }

    /// Whether [`Flags::URGENT`] is set.
    fn is_urgent(&self) -> bool {
        self.flags.contains(Flags::URGENT)
    }
}

impl WireSize for Bytes {
    fn wire_size(&self) -> usize {
        self.len()
    }
}

impl WireSize for Vec<u8> {
    fn wire_size(&self) -> usize {
        self.len()
    }
}

impl<T: WireSize + ?Sized> WireSize for &T {
    fn wire_size(&self) -> usize {
        (**self).wire_size()
    }

    fn is_urgent(&self) -> bool {
        (**self).is_urgent()
    }
}
