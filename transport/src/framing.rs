//! Sans-IO length-prefixed framing with channel ids, so several logical
//! channels share one byte stream.
//!
//! Wire format of one frame (all integers big-endian):
//!
//! ```text
//! +----------------+----------------+-------+-----------------+
//! | length: u32    | channel: u32   | flags | payload         |
//! | payload bytes  |                | u8    | (length bytes)  |
//! +----------------+----------------+-------+-----------------+
//! ```
//!
//! The decoder never allocates on the word of the peer: a claimed length
//! above [`FrameCodec::max_frame_size`] is an error as soon as the header
//! is in, before any payload is buffered, and no buffer is reserved for the
//! claimed size; the payload is split off the input buffer without copying.
//! After an error the stream is out of sync and the connection must be closed.
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use quorate_transport::framing::{ChannelId, Flags, Frame, FrameCodec};
//!
//! let codec = FrameCodec::new();
//! let mut wire = BytesMut::new();
//! codec.encode(&Frame::new(ChannelId(3), Bytes::from_static(b"hi")), &mut wire).unwrap();
//! codec.encode(&Frame::new(ChannelId(4), Bytes::new()).with_flags(Flags::FIN), &mut wire).unwrap();
//!
//! let first = codec.decode(&mut wire).unwrap().unwrap();
//! assert_eq!((first.channel, &first.payload[..]), (ChannelId(3), &b"hi"[..]));
//! let second = codec.decode(&mut wire).unwrap().unwrap();
//! assert!(second.flags.contains(Flags::FIN));
//! assert_eq!(codec.decode(&mut wire).unwrap(), None); // needs more bytes
//! ```

use core::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes in a frame header: length, channel and flags.
pub const HEADER_LEN: usize = 9;

/// The default [`FrameCodec::max_frame_size`]: 8 MiB of payload.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 8 * 1024 * 1024;

/// A logical channel on a connection. The patterns use one per socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ChannelId(pub u32);

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "channel {}", self.0)
    }
}

/// Per-frame flag bits. Unknown bits are rejected, so they can be given a
/// meaning later without old peers misreading them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Flags(u8);

impl Flags {
    /// No flags.
    pub const NONE: Flags = Flags(0);
    /// The sender will send nothing more on this channel.
    pub const FIN: Flags = Flags(0x01);
    /// Control traffic (Raft heartbeats, votes and their answers): a
    /// transport sends it ahead of bulk frames queued for the same peer and
    /// hands it to the receiver ahead of them, so a large transfer never
    /// delays it. Set it on small frames only.
    pub const URGENT: Flags = Flags(0x02);
    /// Every bit with a meaning.
    pub const KNOWN: Flags = Flags(0x03);

    /// The flags in `bits`, or an error naming the unknown bits.
    pub const fn from_bits(bits: u8) -> Result<Flags, FrameError> {
        if bits & !Self::KNOWN.0 != 0 {
            Err(FrameError::UnknownFlags { bits })
        } else {
            Ok(Flags(bits))
        }
    }

    /// The raw bits.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every bit of `other` is set here.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// These flags plus `other`.
    pub const fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

/// One frame: a payload on a channel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Frame {
    /// The logical channel it belongs to.
    pub channel: ChannelId,
    /// Its flags.
    pub flags: Flags,
    /// Its payload, shared without copying with the buffer it was decoded from.
    pub payload: Bytes,
}

impl Frame {
    /// A frame with no flags.
    pub fn new(channel: ChannelId, payload: Bytes) -> Self {
        Frame {
            channel,
            flags: Flags::NONE,
            payload,
        }
    }

    /// This frame with `flags`.
    pub fn with_flags(mut self, flags: Flags) -> Self {
        self.flags = flags;
        self
    }
}

/// What was wrong with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The payload is longer than the codec allows (claimed by the peer when
    /// decoding, or given by the caller when encoding).
    #[error("frame payload of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The payload length.
        len: u64,
        /// The configured maximum.
        max: usize,
    },
    /// The header has flag bits this version does not know.
    #[error("frame has unknown flag bits {bits:#04x}")]
    UnknownFlags {
        /// The offending bits.
        bits: u8,
    },
}

/// Encodes and decodes [`Frame`]s on [`BytesMut`] buffers. It holds only
/// its configuration, so one codec can serve both directions of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameCodec {
    max_frame_size: usize,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new()
    }
}

impl FrameCodec {
    /// A codec with the [default maximum](DEFAULT_MAX_FRAME_SIZE) payload size.
    pub const fn new() -> Self {
        FrameCodec {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
        }
    }

    /// A codec allowing payloads of at most `max` bytes (capped at
    /// `u32::MAX`, the most the length field can say).
    pub const fn with_max_frame_size(max: usize) -> Self {
        let cap = u32::MAX as usize;
        FrameCodec {
            max_frame_size: if max > cap { cap } else { max },
        }
    }

    /// The largest payload this codec accepts or produces.
    pub const fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Appends `frame` to `dst`, or returns [`FrameError::TooLarge`] and
    /// leaves `dst` unchanged.
    pub fn encode(&self, frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode_parts(frame.channel, frame.flags, &frame.payload, dst)
    }

    /// Like [`encode`](Self::encode), from parts, for callers that do not
    /// hold a [`Frame`].
    pub fn encode_parts(
        &self,
        channel: ChannelId,
        flags: Flags,
        payload: &[u8],
        dst: &mut BytesMut,
    ) -> Result<(), FrameError> {
        let len = self.checked_len(payload.len())?;
        dst.reserve(HEADER_LEN + payload.len());
        dst.put_u32(len);
        dst.put_u32(channel.0);
        dst.put_u8(flags.0);
        dst.extend_from_slice(payload);
        Ok(())
    }

    /// Takes the next whole frame off the front of `src`.
    ///
    /// `Ok(None)` means more bytes are needed (`src` is untouched). An error
    /// leaves `src` untouched too; the stream cannot be resynchronised, so
    /// close the connection.
    pub fn decode(&self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(header) = src.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let mut header = header;
        let len = header.get_u32();
        let channel = ChannelId(header.get_u32());
        let flags = Flags::from_bits(header.get_u8())?;
        // u32 always fits usize on the targets we build for (>= 32 bits).
        let len = len as usize;
        if len > self.max_frame_size {
            return Err(FrameError::TooLarge {
                len: len as u64,
                max: self.max_frame_size,
            });
        }
        if src.len() - HEADER_LEN < len {
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let payload = src.split_to(len).freeze();
        Ok(Some(Frame {
            channel,
            flags,
            payload,
        }))
    }

    fn checked_len(&self, len: usize) -> Result<u32, FrameError> {
        match u32::try_from(len) {
            Ok(l) if len <= self.max_frame_size => Ok(l),
            _ => Err(FrameError::TooLarge {
                len: len as u64,
                max: self.max_frame_size,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(channel: u32, flags: Flags, payload: &[u8]) -> Frame {
        Frame::new(ChannelId(channel), Bytes::copy_from_slice(payload)).with_flags(flags)
    }

    #[test]
    fn header_layout_is_big_endian_length_channel_flags() {
        let mut buf = BytesMut::new();
        FrameCodec::new()
            .encode(&frame(0x0102_0304, Flags::FIN, b"abc"), &mut buf)
            .unwrap();
        // Hand-assembled from the documented layout.
        assert_eq!(
            &buf[..],
            &[0, 0, 0, 3, 1, 2, 3, 4, 0x01, b'a', b'b', b'c'][..]
        );
    }

    #[test]
    fn oversized_claim_is_rejected_from_the_header_alone() {
        let codec = FrameCodec::with_max_frame_size(16);
        // Claims 4 GiB - 1 with only the header present.
        let mut src = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 0][..]);
        let cap_before = src.capacity();
        assert_eq!(
            codec.decode(&mut src),
            Err(FrameError::TooLarge {
                len: u64::from(u32::MAX),
                max: 16
            })
        );
        assert_eq!(src.len(), HEADER_LEN, "input consumed on error");
        assert_eq!(src.capacity(), cap_before, "buffer grew for a claimed size");
    }

    #[test]
    fn default_max_rejects_just_over_8_mib() {
        let codec = FrameCodec::new();
        let len = (DEFAULT_MAX_FRAME_SIZE + 1) as u32;
        let mut src = BytesMut::new();
        src.put_u32(len);
        src.put_u32(0);
        src.put_u8(0);
        assert!(matches!(
            codec.decode(&mut src),
            Err(FrameError::TooLarge { .. })
        ));
        let mut dst = BytesMut::new();
        let big = vec![0u8; DEFAULT_MAX_FRAME_SIZE + 1];
        assert!(
            codec
                .encode_parts(ChannelId(0), Flags::NONE, &big, &mut dst)
                .is_err()
        );
        assert!(dst.is_empty());
        assert!(
            codec
                .encode_parts(ChannelId(0), Flags::NONE, &big[1..], &mut dst)
                .is_ok()
        );
    }

    #[test]
    fn unknown_flags_are_an_error() {
        let mut src = BytesMut::from(&[0, 0, 0, 0, 0, 0, 0, 0, 0x80][..]);
        assert_eq!(
            FrameCodec::new().decode(&mut src),
            Err(FrameError::UnknownFlags { bits: 0x80 })
        );
        assert_eq!(
            Flags::from_bits(0x07),
            Err(FrameError::UnknownFlags { bits: 0x07 })
        );
        assert_eq!(Flags::from_bits(0x01), Ok(Flags::FIN));
        assert_eq!(Flags::from_bits(0x03), Ok(Flags::FIN.union(Flags::URGENT)));
    }

    #[test]
    fn flags_algebra() {
        assert!(Flags::NONE.union(Flags::FIN).contains(Flags::FIN));
        assert!(!Flags::NONE.contains(Flags::FIN));
        assert!(Flags::FIN.contains(Flags::NONE));
        assert_eq!(Flags::FIN.bits(), 1);
    }

    #[test]
    fn max_is_capped_at_the_length_field() {
        assert_eq!(
            FrameCodec::with_max_frame_size(usize::MAX).max_frame_size(),
            u32::MAX as usize
        );
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        (
            any::<u32>(),
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(c, fin, p)| frame(c, if fin { Flags::FIN } else { Flags::NONE }, &p))
    }

    proptest! {
        /// Frames written back to back and fed in arbitrary chunks decode to
        /// the same frames in order, with nothing left over.
        #[test]
        fn random_splits_decode_to_the_same_frames(
            frames in proptest::collection::vec(arb_frame(), 0..20),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..30),
        ) {
            let codec = FrameCodec::with_max_frame_size(300);
            let mut wire = BytesMut::new();
            for f in &frames {
                codec.encode(f, &mut wire).unwrap();
            }
            let wire = wire.freeze();
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            points.push(0);
            points.push(wire.len());
            points.sort_unstable();
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for w in points.windows(2) {
                buf.extend_from_slice(&wire[w[0]..w[1]]);
                while let Some(f) = codec.decode(&mut buf).unwrap() {
                    out.push(f);
                }
            }
            prop_assert_eq!(out, frames);
            prop_assert!(buf.is_empty());
        }

        /// Garbage never panics, never yields a payload over the maximum, and
        /// an error or `None` leaves the input as it was.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), max in 0usize..128) {
            let codec = FrameCodec::with_max_frame_size(max);
            let mut buf = BytesMut::from(&bytes[..]);
            loop {
                let before = buf.clone();
                match codec.decode(&mut buf) {
                    Ok(Some(f)) => prop_assert!(f.payload.len() <= max),
                    Ok(None) | Err(_) => {
                        prop_assert_eq!(&buf, &before);
                        break;
                    }
                }
            }
        }
    }
}
